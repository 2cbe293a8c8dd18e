"""Sequence-level distillation: `nmt distill` writes a teacher's translations with their
description, a student recipe trains on them (warm-started with `train.init_from`, on the
teacher's tokenizer with `tokenizer.model`) and its bundle names the teacher; every way of getting
this wrong is one line of error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nmt.bundle import load_bundle, record_meta
from nmt.errors import BundleError
from tests.conftest import assert_one_line_error, run_nmt, tiny_recipe, write_recipe


@pytest.fixture(scope="module")
def distilled(trained_bundles: dict[str, Path], tiny_corpus: Path, tmp_path_factory) -> tuple[Path, Path]:
    """(teacher bundle, its translations of the tiny training sources)."""
    teacher = trained_bundles["transformer"]
    out = tmp_path_factory.mktemp("distill") / "train.teacher.de"
    result = run_nmt(
        "distill", "--model", str(teacher), "--beam-size", "2",
        "--src", str(tiny_corpus / "train.en"), "--out", str(out),
    )  # fmt: skip
    assert "400 translations" in result.stdout
    return teacher, out


def _student(corpus: Path, teacher: Path, targets: Path, out_dir: Path, **train) -> dict:
    recipe = tiny_recipe(corpus, out_dir, "transformer", init_from=str(teacher), **train)
    recipe["data"]["train"]["tgt"] = str(targets)
    recipe["tokenizer"]["model"] = str(teacher / "spm.model")
    recipe["distill"] = {"teacher": str(teacher)}
    recipe["name"] = "tiny-student"
    return recipe


def test_distill_writes_the_teacher_translations_and_their_description(distilled, tiny_corpus):
    teacher, out = distilled
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 400
    expected = run_nmt(
        "translate", "--model", str(teacher), "--beam-size", "2",
        stdin="".join(tiny_corpus.joinpath("train.en").read_text(encoding="utf-8").splitlines(True)[:5]),
    ).stdout.splitlines()  # fmt: skip
    assert lines[:5] == expected
    description = json.loads(out.with_name(out.name + ".teacher.json").read_text(encoding="utf-8"))
    bundle = load_bundle(teacher)
    assert description["teacher"]["version"] == bundle.version
    assert description["source"]["lines"] == 400
    assert description["search"]["beam_size"] == 2


def test_student_trains_from_the_teacher_output_and_names_its_teacher(distilled, tiny_corpus, tmp_path):
    teacher, targets = distilled
    recipe = write_recipe(tmp_path / "r.yaml", _student(tiny_corpus, teacher, targets, tmp_path / "out"))
    result = run_nmt("train", "--config", str(recipe))
    assert "weights initialised from" in result.stderr
    student = load_bundle(result.stdout.strip().splitlines()[-1])
    assert student.teacher is not None
    assert student.teacher["version"] == load_bundle(teacher).version
    assert student.meta["training"]["init_from"] == str(teacher)
    assert (student.path / "spm.model").read_bytes() == (teacher / "spm.model").read_bytes()
    # a student bundle whose teacher was removed from its metadata is refused, in one line
    record_meta(student.path, "distilled", {"targets": []})
    with pytest.raises(BundleError, match="must name its teacher"):
        load_bundle(student.path)
    result = run_nmt("translate", "--model", str(student.path), stdin="a dog\n", check=False)
    assert_one_line_error(result, "distilled.teacher")


def test_student_recipe_errors_are_one_line(distilled, trained_bundles, tiny_corpus, tmp_path):
    teacher, targets = distilled
    # targets without a description (not written by `nmt distill`)
    bare = tmp_path / "bare.de"
    bare.write_bytes(targets.read_bytes())
    recipe = write_recipe(tmp_path / "a.yaml", _student(tiny_corpus, teacher, bare, tmp_path / "a"))
    assert_one_line_error(run_nmt("train", "--config", str(recipe), check=False), "nmt distill", "bare.de")
    # targets written by another teacher
    other = trained_bundles["lstm"]
    recipe_dict = _student(tiny_corpus, teacher, targets, tmp_path / "b")
    recipe_dict["distill"]["teacher"] = str(other)
    recipe = write_recipe(tmp_path / "b.yaml", recipe_dict)
    assert_one_line_error(run_nmt("train", "--config", str(recipe), check=False), "teacher version")
    # init_from a bundle whose weights do not fit the recipe's model
    recipe_dict = _student(tiny_corpus, teacher, targets, tmp_path / "c")
    recipe_dict["model"]["d_model"] = recipe_dict["model"]["d_model"] * 2
    recipe = write_recipe(tmp_path / "c.yaml", recipe_dict)
    assert_one_line_error(run_nmt("train", "--config", str(recipe), check=False), "train.init_from")
    # init_from a bundle with another tokenizer than the run's
    recipe_dict = _student(tiny_corpus, teacher, targets, tmp_path / "d")
    del recipe_dict["tokenizer"]["model"]
    recipe_dict["tokenizer"]["vocab_size"] = 300
    recipe = write_recipe(tmp_path / "d.yaml", recipe_dict)
    assert_one_line_error(run_nmt("train", "--config", str(recipe), check=False), "tokenizer.model")
