"""Recipes: one YAML file, validated once into frozen config objects.

A recipe has five sections: `data`, `tokenizer`, `model`, `train` and `search`. Unknown keys and
wrong types are errors that name the key (``model.hidden_size: Input should be a valid integer``),
raised as `ConfigError`. pydantic does the validation: it gives typed, frozen objects and precise
messages for free, which a hand-written checker would only approximate.

`model` is one of three shapes, chosen by `arch`: ``transformer``, ``rnn`` (no attention) and
``rnn_attention``; the recurrent two take a `cell`: ``lstm`` (the default), ``gru`` or ``rnn``
(Elman). The names from before cells, ``lstm`` and ``lstm_attention``, are read as ``rnn`` and
``rnn_attention`` with cell ``lstm``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nmt.errors import ConfigError
from nmt.languages import Direction, check_language


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CorpusConfig(_Section):
    """One parallel corpus: two aligned files (plain or .gz) or one TSV file (src<TAB>tgt).

    `src_lang` / `tgt_lang` default to the `data` section's; `weight` scales the corpus's share
    of each epoch (see `DataConfig.temperature`); `name` labels it in logs and metrics.
    """

    name: str | None = None
    src: Path | None = None
    tgt: Path | None = None
    tsv: Path | None = None
    src_lang: str | None = None
    tgt_lang: str | None = None
    weight: float = Field(1.0, gt=0.0, description="sampling weight among the training corpora")

    @model_validator(mode="after")
    def _one_format(self) -> CorpusConfig:
        pair = self.src is not None and self.tgt is not None
        if pair == (self.tsv is not None) or (self.src is None) != (self.tgt is None):
            raise ValueError("give either both 'src' and 'tgt' or one 'tsv'")
        return self

    @field_validator("src_lang", "tgt_lang")
    @classmethod
    def _language(cls, code: str | None) -> str | None:
        return None if code is None else check_language(code)


def _one_or_many(raw: Any) -> str:
    return "corpora" if isinstance(raw, list | tuple) else "corpus"


# `data.train` and `data.valid` take one corpus (a mapping) or a list of them; the tags name the
# two shapes for pydantic and are left out of error messages (like the model's arch names)
Corpora = Annotated[
    Annotated[CorpusConfig, Tag("corpus")] | Annotated[tuple[CorpusConfig, ...], Tag("corpora")],
    Discriminator(_one_or_many),
]
CORPORA_TAGS = ("corpus", "corpora")


@dataclass(frozen=True)
class Corpus:
    """A corpus of the recipe with everything resolved: its name, direction and weight.

    `key` is where the recipe declares it (``data.train`` or ``data.train.2``), for messages.
    """

    name: str
    direction: Direction
    config: CorpusConfig
    key: str

    @property
    def weight(self) -> float:
        return self.config.weight


class DataConfig(_Section):
    """Training corpora, validation sets and the filter applied to training pairs.

    An epoch draws, from each training corpus i of n_i kept pairs, round(N * p_i) pairs where
    N = sum n_i and p_i is proportional to (weight_i * n_i) ** (1 / temperature): temperature 1
    samples in proportion to (weighted) size, larger values flatten towards uniform
    (Arivazhagan et al. 2019). With one corpus an epoch is every kept pair once, as before.
    """

    src_lang: str | None = None
    tgt_lang: str | None = None
    train: Corpora
    valid: Corpora
    max_tokens: int = Field(128, ge=1, description="drop pairs with more subword tokens on either side")
    max_ratio: float = Field(3.0, gt=1.0, description="drop pairs whose token-length ratio exceeds this")
    temperature: float = Field(1.0, gt=0.0, description="corpus sampling temperature; 1 = by size")
    dedup: bool = Field(False, description="drop exact duplicate pairs within each training corpus")
    prepared: Path | None = Field(
        None, description="folder of the prepared dataset (default: <train.out_dir>/data)"
    )

    @field_validator("src_lang", "tgt_lang")
    @classmethod
    def _language(cls, code: str | None) -> str | None:
        return None if code is None else check_language(code)

    def _resolve(self, section: str, default_name: str) -> tuple[Corpus, ...]:
        raw = getattr(self, section)
        many = isinstance(raw, tuple)
        configs = raw if many else (raw,)
        corpora: list[Corpus] = []
        names: set[str] = set()
        for index, config in enumerate(configs):
            key = f"data.{section}.{index}" if many else f"data.{section}"
            src = config.src_lang or self.src_lang
            tgt = config.tgt_lang or self.tgt_lang
            for side, code in (("src_lang", src), ("tgt_lang", tgt)):
                if code is None:
                    raise ConfigError(f"{key}.{side}: Field required (or data.{side})", key=f"{key}.{side}")
            assert src is not None and tgt is not None
            try:
                direction = Direction(src, tgt)
            except ValueError as error:
                raise ConfigError(f"{key}: {error}", key=key) from None
            name = config.name or (str(direction) if many else default_name)
            if name in names:
                raise ConfigError(
                    f"{key}.name: {name!r} names two corpora; give each a name", key=f"{key}.name"
                )
            names.add(name)
            corpora.append(Corpus(name, direction, config, key))
        return tuple(corpora)

    @property
    def train_corpora(self) -> tuple[Corpus, ...]:
        """The training corpora, resolved; ConfigError naming the key when one lacks a language."""
        return self._resolve("train", "train")

    @property
    def valid_sets(self) -> tuple[Corpus, ...]:
        """The validation sets, resolved (one corpus is named ``valid``)."""
        return self._resolve("valid", "valid")

    @property
    def directions(self) -> tuple[Direction, ...]:
        """The training directions, sorted."""
        return tuple(sorted({corpus.direction for corpus in self.train_corpora}))

    @property
    def multilingual(self) -> bool:
        """More than one direction: sources carry a target-language token (Johnson et al. 2017)."""
        return len(self.directions) > 1

    @property
    def target_languages(self) -> tuple[str, ...]:
        return tuple(sorted({direction.target for direction in self.directions}))

    def check(self) -> None:
        """ConfigError naming the key of the first corpus or validation set that does not fit."""
        directions = self.directions
        for valid in self.valid_sets:
            if valid.direction not in directions:
                shown = ", ".join(map(str, directions))
                raise ConfigError(
                    f"{valid.key}: direction {valid.direction} is not trained (data.train has {shown})",
                    key=valid.key,
                )


class TokenizerConfig(_Section):
    type: Literal["unigram", "bpe"] = "unigram"
    vocab_size: int = Field(8000, ge=16)
    joint: bool = True
    character_coverage: float = Field(1.0, gt=0.0, le=1.0)
    sample_sentences: int = Field(
        500_000, ge=1, description="train on a uniform sample of at most this many sentences"
    )
    model: Path | None = Field(
        None, description="use this SentencePiece model file (joint) instead of training one"
    )

    @model_validator(mode="after")
    def _given_model_is_joint(self) -> TokenizerConfig:
        if self.model is not None and not self.joint:
            raise ValueError("model: a given SentencePiece model is one joint tokenizer (joint: true)")
        return self


class _RNNBase(_Section):
    cell: Literal["lstm", "gru", "rnn"] = "lstm"  # rnn: Elman's, with tanh
    embed_dim: int = Field(256, ge=1)
    hidden_size: int = Field(512, ge=1)
    layers: int = Field(2, ge=1)
    bidirectional: bool = True
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    tie_embeddings: bool = True  # target embedding shared with the output projection

    @property
    def position_limit(self) -> int | None:
        """The most tokens a source or target sentence may have, EOS included: none for an RNN."""
        return None

    @property
    def preferred_default(self) -> bool:
        """Whether a language pair's default model should be this kind (see TransformerConfig)."""
        return False

    @property
    def export_formats(self) -> tuple[str, ...]:
        """The `nmt export --format` values this model can be exported to."""
        return ("onnx",)


class RNNConfig(_RNNBase):
    """Encoder-decoder without attention (Sutskever 2014; Cho 2014 with `context_every_step`)."""

    arch: Literal["rnn"]
    context_every_step: bool = True  # feed the encoder summary at every decoder step (Cho 2014)

    @property
    def architecture(self) -> str:
        """The name reports show: the cell ("lstm", "gru", "rnn")."""
        return self.cell

    @property
    def attends(self) -> bool:
        """Whether the model has attention over the source, which alignments come from."""
        return False


class AttentionRNNConfig(_RNNBase):
    """Encoder-decoder with attention (Bahdanau additive or Luong dot/general scores)."""

    arch: Literal["rnn_attention"]
    attention: Literal["bahdanau", "luong_dot", "luong_general"] = "bahdanau"
    input_feeding: bool = True

    @property
    def architecture(self) -> str:
        """The name reports show: "lstm_attention", "gru_attention" or "rnn_attention"."""
        return f"{self.cell}_attention"

    @property
    def attends(self) -> bool:
        """Whether the model has attention over the source, which alignments come from."""
        return True


class TransformerConfig(_Section):
    arch: Literal["transformer"]
    d_model: int = Field(256, ge=1)
    heads: int = Field(4, ge=1)
    ff_dim: int = Field(1024, ge=1)
    encoder_layers: int = Field(3, ge=1)
    decoder_layers: int = Field(3, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    attention_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    pre_norm: bool = True
    share_embeddings: bool = True  # one matrix for source, target and output (needs a joint vocab)
    max_positions: int = Field(1024, ge=8)
    alignment_layer: int = Field(
        -1,
        description="the decoder layer whose cross-attention, heads averaged, gives alignments; -1 = the last",
    )

    @model_validator(mode="after")
    def _heads_divide(self) -> TransformerConfig:
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        return self

    @field_validator("alignment_layer")
    @classmethod
    def _layer_exists(cls, layer: int, info: ValidationInfo) -> int:
        layers = info.data.get("decoder_layers")  # absent when decoder_layers itself was invalid
        if layers is not None and not -layers <= layer < layers:
            raise ValueError(f"must be a decoder layer, between {-layers} and {layers - 1}")
        return layer

    @property
    def architecture(self) -> str:
        """The name reports show."""
        return self.arch

    @property
    def attends(self) -> bool:
        """Whether the model has attention over the source, which alignments come from."""
        return True

    @property
    def position_limit(self) -> int | None:
        """The most tokens a source or target sentence may have, EOS included: the position table's."""
        return self.max_positions

    @property
    def preferred_default(self) -> bool:
        """Whether a language pair's default model should be this kind: yes (the service has always
        defaulted to a pair's Transformer; name a model in the request to get another)."""
        return True

    @property
    def export_formats(self) -> tuple[str, ...]:
        """The `nmt export --format` values this model can be exported to."""
        return ("onnx", "ctranslate2")


# the recurrent archs before cells were a choice: `arch: lstm` is `arch: rnn` with `cell: lstm`.
# Stored configs keep the old spelling (a bundle's version hashes its config as written), so the
# old names are mapped when a config is read, never rewritten.
LEGACY_ARCHS = {"lstm": "rnn", "lstm_attention": "rnn_attention"}


def _legacy_arch(raw: Any) -> Any:
    """A raw `model` section with an old arch name -> the same section in today's names."""
    if not isinstance(raw, dict) or raw.get("arch") not in LEGACY_ARCHS:
        return raw
    if raw.get("cell", "lstm") != "lstm":
        raise ValueError(
            f"cell {raw['cell']!r} needs arch: {LEGACY_ARCHS[raw['arch']]} "
            f"(arch {raw['arch']!r} means cell 'lstm')"
        )
    return {**raw, "arch": LEGACY_ARCHS[raw["arch"]], "cell": "lstm"}


AnyModelConfig = TransformerConfig | RNNConfig | AttentionRNNConfig  # what a `model` section becomes
ModelConfig = Annotated[
    Annotated[AnyModelConfig, Field(discriminator="arch")],
    BeforeValidator(_legacy_arch),
]
ARCHS = ("transformer", "rnn", "rnn_attention")


class SearchConfig(_Section):
    """Decoding options; the recipe's copy is used for validation and stored in the bundle."""

    beam_size: int = Field(5, ge=1, le=64)
    length_penalty: float = Field(0.6, ge=0.0, description="GNMT alpha; 0 ranks by raw log-prob")
    max_len_a: float = Field(1.5, ge=0.0, description="max target length = a * source length + b")
    max_len_b: int = Field(10, ge=1)
    max_length: int | None = Field(None, ge=1, description="most target tokens, whatever the source length")
    n_best: int = Field(1, ge=1)
    no_repeat_ngram: int = Field(0, ge=0, description="block repeated n-grams of this size; 0 = off")

    # the one place the search options' limits live: recipes, bundles, `nmt translate` and the
    # service all go through this class (the service adds its own caps first, as policy)

    @field_validator("n_best")
    @classmethod
    def _n_best_fits(cls, n_best: int, info: ValidationInfo) -> int:
        beam_size = info.data.get("beam_size")  # absent when beam_size itself was invalid
        if beam_size is not None and n_best > beam_size:
            raise ValueError(f"must not exceed beam_size ({beam_size})")
        return n_best

    def with_overrides(self, **given: Any) -> SearchConfig:
        """These options with the given ones replaced, validated; None means "not given".

        Raises ConfigError naming the first bad option, e.g. ``n_best: must not exceed
        beam_size (5)``, with that option in `ConfigError.key`.
        """
        changes = {key: value for key, value in given.items() if value is not None}
        if not changes:
            return self
        try:
            return SearchConfig.model_validate({**self.model_dump(), **changes})
        except ValidationError as error:
            item = error.errors()[0]
            key = ".".join(str(part) for part in item["loc"]) or "search"
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                message = "unknown search option"
            raise ConfigError(f"{key}: {message}", key=key) from None


class TrainConfig(_Section):
    out_dir: Path
    seed: int = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_tokens: int = Field(4096, ge=16, description="padded tokens per batch, per process")
    accum_steps: int = Field(1, ge=1)
    max_epochs: int = Field(50, ge=1)
    max_steps: int = Field(0, ge=0, description="optimizer steps; 0 = no limit")
    max_seconds: float = Field(
        0.0, ge=0.0, description="training wall time (steps only, validation excluded); 0 = no limit"
    )
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(5e-4, gt=0.0)
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = Field(0.0, ge=0.0)
    schedule: Literal["inverse_sqrt", "plateau"] = "inverse_sqrt"
    warmup_steps: int = Field(4000, ge=0)
    plateau_factor: float = Field(0.5, gt=0.0, lt=1.0)
    plateau_patience: int = Field(1, ge=0)
    min_lr: float = Field(1e-6, ge=0.0)
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    clip_norm: float = Field(1.0, ge=0.0, description="0 = no clipping")
    amp: Literal["none", "bf16", "fp16"] = "none"
    patience: int = Field(10, ge=1, description="epochs without a better validation BLEU before stopping")
    keep_last: int = Field(5, ge=1)
    save_every_steps: int = Field(1000, ge=0, description="mid-epoch checkpoints; 0 = epoch ends only")
    log_every_steps: int = Field(50, ge=1)
    eval_max_sentences: int = Field(0, ge=0, description="validate BLEU on the first N pairs; 0 = all")
    eval_batch_size: int = Field(64, ge=1)
    init_from: Path | None = Field(
        None, description="a bundle whose weights start a new run (same model shapes and tokenizer)"
    )


class DistillConfig(_Section):
    """Sequence-level knowledge distillation (Kim & Rush 2016): the training targets are the
    `teacher` bundle's translations of the training sources, written by `nmt distill`, which
    leaves a `<targets>.teacher.json` beside them; the student's bundle records its teacher."""

    teacher: Path


class Recipe(_Section):
    name: str
    data: DataConfig
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: ModelConfig
    train: TrainConfig
    search: SearchConfig = SearchConfig()
    distill: DistillConfig | None = None

    @model_validator(mode="after")
    def _shared_needs_joint(self) -> Recipe:
        if (
            isinstance(self.model, TransformerConfig)
            and self.model.share_embeddings
            and not self.tokenizer.joint
        ):
            raise ValueError("model.share_embeddings needs tokenizer.joint: true")
        return self


def _describe(error: ValidationError) -> str:
    """Turn pydantic's errors into lines like ``model.heads: Input should be a valid integer``."""
    lines = []
    for item in error.errors():
        loc = [str(part) for part in item["loc"] if str(part) not in ARCHS + CORPORA_TAGS]
        key = ".".join(loc) or "recipe"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{key}: {message}")
    return "; ".join(lines)


def parse_recipe(raw: dict[str, Any], source: str = "recipe") -> Recipe:
    """Validate a recipe given as a dict; raises ConfigError naming every bad key."""
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{source}: {_describe(error)}") from None
    try:
        recipe.data.check()
        if recipe.data.multilingual and not recipe.tokenizer.joint:
            raise ConfigError(
                "tokenizer.joint: a multilingual recipe (several directions) needs one joint tokenizer",
                key="tokenizer.joint",
            )
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}", key=error.key) from None
    return recipe


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply ``section.key=value`` (value parsed as YAML) to a raw recipe dict, in place."""
    key, sep, value = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. train.max_steps=100")
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part} is not a section")
    node[leaf] = yaml.safe_load(value)


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a YAML recipe, apply ``key=value`` overrides, validate. Errors name the file and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections")
    for override in overrides:
        apply_override(raw, override)
    return parse_recipe(raw, str(path))


def parse_section(name: str, raw: Any) -> Any:
    """Validate one section by itself, e.g. the `model` or `search` options stored in a bundle."""
    annotation: Any = ModelConfig if name == "model" else Recipe.model_fields[name].annotation
    try:
        return TypeAdapter(annotation).validate_python(raw)
    except ValidationError as error:
        raise ConfigError(f"{name}: {_describe(error)}") from None
