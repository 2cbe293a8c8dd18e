"""A training run's folder: where each of its files lives, and how a bundle is made from it.

    <out_dir>/recipe.yaml        the validated recipe the run was started with
    <out_dir>/spm*.model         its SentencePiece model(s)
    <out_dir>/data/              its prepared dataset (nmt.dataset), unless data.prepared names one
    <out_dir>/checkpoints/       step-*.pt (last N) and best.pt
    <out_dir>/metrics.jsonl      one line per logged event; metrics.png plots it
    <out_dir>/bundle/            the model bundle written when training ends

`nmt train` and `nmt average` both make their bundles through `RunDir.write_bundle`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from nmt.bundle import save_bundle
from nmt.config import Recipe, parse_recipe
from nmt.dataset import tokenizer_names
from nmt.errors import NmtError
from nmt.models import build_model
from nmt.runlog import MetricsLog
from nmt.tokenizer import Tokenizer

# what may change when a run is resumed: how long and where it trains, how often it logs, saves
# and validates, and how it decodes; everything else (data, tokenizer, model, optimizer) is the run
RESUMABLE_CHANGES = (
    "train.out_dir",  # the folder may have moved
    "data.prepared",  # so may the prepared data (checked against the run's tokenizer when used)
    "train.max_epochs",
    "train.max_steps",
    "train.max_seconds",
    "train.patience",
    "train.device",
    "train.keep_last",
    "train.save_every_steps",
    "train.log_every_steps",
    "train.eval_max_sentences",
    "train.eval_batch_size",
    "search.",
)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}, "c": 2} -> {"a.b": 1, "c": 2}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def recipe_file(self) -> Path:
        return self.path / "recipe.yaml"

    @property
    def log(self) -> MetricsLog:
        return MetricsLog(self.path / "metrics.jsonl")

    @property
    def plot(self) -> Path:
        return self.path / "metrics.png"

    @property
    def bundle(self) -> Path:
        return self.path / "bundle"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:08d}.pt"

    @property
    def data(self) -> Path:
        """The run's own prepared dataset (unless the recipe names one in data.prepared)."""
        return self.path / "data"

    def prepared(self, recipe: Recipe) -> Path:
        """Where the run's prepared dataset lives: data.prepared, or data/ in the run."""
        return recipe.data.prepared or self.data

    def tokenizer_files(self, recipe: Recipe) -> tuple[Path, Path]:
        src, tgt = tokenizer_names(recipe)
        return self.path / src, self.path / tgt

    def given_tokenizers(self, recipe: Recipe) -> tuple[Path, Path] | None:
        """The tokenizer files data preparation must use: the run's own once it has them (a run
        keeps its tokenizer), else the recipe's `tokenizer.model`; None: train one."""
        own = self.tokenizer_files(recipe)
        if all(path.is_file() for path in own):
            return own
        given = recipe.tokenizer.model
        return (given, given) if given is not None else None

    def load_tokenizers(self, recipe: Recipe) -> tuple[Tokenizer, Tokenizer]:
        src, tgt = self.tokenizer_files(recipe)
        return Tokenizer.load(src), Tokenizer.load(tgt)

    def save_recipe(self, recipe: Recipe) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
        self.recipe_file.write_text(text, encoding="utf-8")

    def check_resumable(self, recipe: Recipe) -> None:
        """Raise NmtError naming the keys where `recipe` differs from the run's own, unless only
        keys that may change between sessions differ (`RESUMABLE_CHANGES`)."""
        stored = _flatten(self.load_recipe().model_dump(mode="json"))
        given = _flatten(recipe.model_dump(mode="json"))
        changed = sorted(
            key
            for key in stored.keys() | given.keys()
            if stored.get(key) != given.get(key) and not key.startswith(RESUMABLE_CHANGES)
        )
        if changed:
            shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
            raise NmtError(
                f"{self.recipe_file}: --resume needs the run's own recipe, but {shown} differ; "
                "resume with that recipe or set another train.out_dir"
            )

    def load_recipe(self) -> Recipe:
        if not self.recipe_file.is_file():
            raise NmtError(f"{self.path}: not a training run (no recipe.yaml)")
        return parse_recipe(
            yaml.safe_load(self.recipe_file.read_text(encoding="utf-8")), str(self.recipe_file)
        )

    def write_bundle(
        self,
        weights: dict[str, torch.Tensor],
        recipe: Recipe,
        meta: dict[str, Any],
        out: Path | None = None,
        dtype: str = "float32",
    ) -> Path:
        """Build the model of `recipe`, load `weights` and save it as a bundle (default: bundle/)."""
        src_tok, tgt_tok = self.load_tokenizers(recipe)
        model = build_model(recipe.model, src_tok.vocab_size, tgt_tok.vocab_size)
        model.load_state_dict(weights)
        directions = recipe.data.directions
        languages = (
            {}  # a multilingual bundle has no one pair (nmt.languages)
            if recipe.data.multilingual
            else {"src_lang": directions[0].source, "tgt_lang": directions[0].target}
        )
        meta = {
            "name": recipe.name,
            **languages,
            "directions": [[d.source, d.target] for d in directions],
            "language_tokens": recipe.data.multilingual,
            **meta,
        }
        return save_bundle(
            out or self.bundle, model, recipe.model, src_tok, tgt_tok, recipe.search, meta, dtype
        )
