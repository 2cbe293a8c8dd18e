"""Sequence-level knowledge distillation (Kim & Rush 2016): a teacher's translations of the
training sources become a student's training targets.

`nmt distill --model TEACHER --src F --out T` writes the teacher's best translation of every line
of F to T, and `T.teacher.json` beside it: which teacher (name, version, recorded test scores),
which source file (sha256, lines) and which search. A recipe with a `distill: {teacher: B}`
section trains on such targets: `check_targets` refuses targets that have no description or
were written by another teacher or teacher version, and the student's bundle.json records
`"distilled": {"teacher": ..., "targets": ...}`; a bundle that says it is distilled but does not
name its teacher is refused when loaded (`nmt.bundle`).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from nmt.bundle import Bundle, load_bundle
from nmt.checkpoint import atomic_write
from nmt.config import Recipe, SearchConfig
from nmt.data import iter_lines
from nmt.errors import NmtError
from nmt.languages import Direction
from nmt.tokenizer import file_sha256
from nmt.translator import Translator

SIDECAR = ".teacher.json"


def sidecar(targets: Path) -> Path:
    """The description written beside a file of teacher translations."""
    return targets.with_name(targets.name + SIDECAR)


def teacher_record(bundle: Bundle) -> dict[str, Any]:
    """What a student keeps of its teacher: name, version and the test scores it recorded."""
    return {"name": bundle.name, "version": bundle.version, "scores": bundle.meta.get("scores", {})}


def write_targets(
    translator: Translator,
    teacher: Bundle,
    src: Path,
    out: Path,
    search: SearchConfig,
    direction: Direction,
    chunk: int = 4096,
) -> int:
    """Translate every line of `src` with the teacher into `out` (atomically), then write its
    description; returns the number of lines. The source is streamed, `chunk` lines at a time."""
    count = 0

    def write(handle) -> None:
        nonlocal count
        lines = iter_lines(src)
        while block := list(itertools.islice(lines, chunk)):
            outputs = translator.translate_best(block, search, direction.target)
            handle.write("".join(text + "\n" for text in outputs).encode("utf-8"))
            count += len(block)

    atomic_write(out, write)
    description = {
        "teacher": teacher_record(teacher),
        "source": {"path": str(src), "sha256": file_sha256(src), "lines": count},
        "direction": str(direction),
        "search": search.model_dump(mode="json"),
        "targets_sha256": file_sha256(out),
    }
    text = json.dumps(description, indent=2, ensure_ascii=False) + "\n"
    atomic_write(sidecar(out), lambda handle: handle.write(text.encode("utf-8")))
    return count


def check_targets(recipe: Recipe) -> dict[str, Any]:
    """The `distilled` record for a student's bundle; NmtError in one line when a training
    corpus's targets were not written by the recipe's teacher (this version) from its sources."""
    assert recipe.distill is not None
    teacher = load_bundle(recipe.distill.teacher)
    targets = []
    for corpus in recipe.data.train_corpora:
        src, tgt = corpus.config.src, corpus.config.tgt
        if src is None or tgt is None:
            raise NmtError(f"distill: {corpus.key} must name src and tgt files (tgt: the teacher's output)")
        described = sidecar(tgt)
        if not described.is_file():
            raise NmtError(
                f"distill: {tgt} has no {described.name}; write it with "
                f"`nmt distill --model {teacher.path} --src {src} --out {tgt}`"
            )
        try:
            record = json.loads(described.read_text(encoding="utf-8"))
            version, source_sha = record["teacher"]["version"], record["source"]["sha256"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            raise NmtError(f"distill: {described} is unreadable; run `nmt distill` again") from None
        if version != teacher.version:
            raise NmtError(
                f"distill: {tgt} was translated by teacher version {version}, "
                f"not {teacher.path} ({teacher.version}); run `nmt distill` again"
            )
        if source_sha != file_sha256(src):
            raise NmtError(f"distill: {tgt} was translated from another file than {src}")
        targets.append({"src": str(src), "tgt": str(tgt), "search": record.get("search")})
    return {"teacher": teacher_record(teacher), "targets": targets}
