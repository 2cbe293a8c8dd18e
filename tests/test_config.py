"""Recipe validation: every mistake is a ConfigError that names the key."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from nmt.config import (
    AttentionRNNConfig,
    RNNConfig,
    SearchConfig,
    TransformerConfig,
    load_recipe,
    parse_recipe,
    parse_section,
)
from nmt.errors import ConfigError


def recipe(**sections) -> dict:
    base = {
        "name": "r",
        "data": {
            "src_lang": "en",
            "tgt_lang": "de",
            "train": {"src": "a", "tgt": "b"},
            "valid": {"tsv": "v.tsv"},
        },
        "model": {"arch": "transformer"},
        "train": {"out_dir": "runs/r"},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return base


def test_defaults_and_model_kinds():
    r = parse_recipe(recipe())
    assert isinstance(r.model, TransformerConfig) and r.search.beam_size == 5 and r.tokenizer.joint
    rnn = parse_recipe(recipe(model={"arch": "rnn"})).model
    assert isinstance(rnn, RNNConfig) and rnn.cell == "lstm" and rnn.architecture == "lstm"
    gru = parse_recipe(recipe(model={"arch": "rnn_attention", "cell": "gru", "attention": "luong_dot"})).model
    assert isinstance(gru, AttentionRNNConfig) and gru.attention == "luong_dot"
    assert (gru.cell, gru.architecture) == ("gru", "gru_attention")
    elman = parse_recipe(recipe(model={"arch": "rnn", "cell": "rnn"})).model
    assert (elman.cell, elman.architecture) == ("rnn", "rnn")


@pytest.mark.parametrize(("old", "new"), [("lstm", RNNConfig), ("lstm_attention", AttentionRNNConfig)])
def test_the_archs_from_before_cells_are_lstm_cells(old, new):
    """Recipes and bundles written before cells were a choice keep their meaning and their name."""
    model = parse_recipe(recipe(model={"arch": old, "hidden_size": 64})).model
    assert isinstance(model, new) and model.cell == "lstm" and model.architecture == old
    assert model.hidden_size == 64
    assert parse_section("model", {"arch": old, "cell": "lstm"}) == model.model_copy(
        update={"hidden_size": 512}
    )


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"model": {"arch": "transformer", "hidden_size": 3}}, "model.hidden_size: unknown key"),
        ({"model": {"arch": "lstm", "attention": "bahdanau"}}, "model.attention: unknown key"),
        (
            {"model": {"arch": "rnn", "cell": "gru", "input_feeding": True}},
            "model.input_feeding: unknown key",
        ),
        ({"model": {"arch": "rnn", "cell": "lstmx"}}, "model.cell: Input should be 'lstm', 'gru' or 'rnn'"),
        ({"model": {"arch": "rnn_attention", "cell": 3}}, "model.cell"),
        ({"model": {"arch": "lstm", "cell": "gru"}}, "model: cell 'gru' needs arch: rnn"),
        ({"model": {"arch": "transformer", "cell": "gru"}}, "model.cell: unknown key"),
        ({"model": {"arch": "gru"}}, "model"),
        ({"model": {"arch": "transformer", "heads": "four"}}, "model.heads: Input should be a valid integer"),
        ({"model": {"arch": "transformer", "d_model": 100, "heads": 3}}, "divisible by heads"),
        ({"model": {"arch": "lstm_attention", "attention": "cosine"}}, "model.attention"),
        ({"train": {"lr": -1}}, "train.lr"),
        ({"train": {"amp": "fp8"}}, "train.amp"),
        ({"search": {"beam_size": 2, "n_best": 4}}, "search.n_best: must not exceed beam_size (2)"),
        ({"data": {"train": {"src": "a"}}}, "data.train: give either both 'src' and 'tgt' or one 'tsv'"),
        ({"tokenizer": {"joint": False}}, "share_embeddings needs tokenizer.joint"),
        ({"extra": {"x": 1}}, "extra: unknown key"),
    ],
)
def test_errors_name_the_key(sections, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_recipe(recipe(**sections))


def test_missing_required_section():
    raw = recipe()
    del raw["train"]
    with pytest.raises(ConfigError, match="train: Field required"):
        parse_recipe(raw)


def test_yaml_file_and_overrides(tmp_path):
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe()))
    r = load_recipe(path, ["train.max_steps=7", "model.dropout=0.25", "search.beam_size=3"])
    assert (r.train.max_steps, r.model.dropout, r.search.beam_size) == (7, 0.25, 3)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_recipe(path, ["train.max_steps"])
    with pytest.raises(ConfigError, match="train.max_steps"):
        load_recipe(path, ["train.max_steps=lots"])
    path.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(path)
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_configs_are_frozen():
    r = parse_recipe(recipe())
    with pytest.raises(ValidationError, match="frozen"):
        r.train.lr = 1.0


def test_every_shipped_recipe_loads():
    from tests.conftest import ROOT

    recipes = {path.stem: load_recipe(path) for path in (ROOT / "training" / "configs").glob("*.yaml")}
    shipped = {
        (r.model.architecture, str(r.data.directions[0])) for r in recipes.values() if not r.data.multilingual
    }
    assert shipped == {
        (a, d) for a in ("transformer", "lstm", "lstm_attention") for d in ("en-de", "de-en")
    } | {
        ("gru_attention", "en-de"),
        ("transformer", "en-fr"),
        ("transformer", "fr-en"),
    }
    multilingual = recipes["transformer-en-de-fr"]
    assert len(multilingual.data.directions) == 6 and multilingual.tokenizer.joint
    assert [str(v.direction) for v in multilingual.data.valid_sets] == [
        str(c.direction) for c in multilingual.data.train_corpora
    ]
    for bilingual in ("transformer-en-fr", "transformer-fr-en"):  # the same model and budget
        assert recipes[bilingual].model == multilingual.model
        assert recipes[bilingual].train.model_copy(update={"out_dir": None}) == multilingual.train.model_copy(
            update={"out_dir": None}
        )
    # Transformer-base on WMT14 (Vaswani et al. 2017), ~25k tokens per step on 8 GPUs
    base = recipes["transformer-base-wmt14-en-de"]
    assert (base.model.d_model, base.model.heads, base.model.ff_dim) == (512, 8, 2048)
    assert (base.model.encoder_layers, base.model.decoder_layers, base.model.dropout) == (6, 6, 0.1)
    assert (base.tokenizer.vocab_size, base.tokenizer.joint, base.train.warmup_steps) == (32000, True, 4000)
    assert base.train.batch_tokens * base.train.accum_steps * 8 == pytest.approx(25_000, rel=0.01)
    assert not base.data.train_corpora[0].config.src.is_absolute()  # user-provided, relative


def test_section_parsing_for_bundles():
    assert parse_section("search", {"beam_size": 3}).beam_size == 3
    with pytest.raises(ConfigError, match="model"):
        parse_section("model", {"arch": "transformer", "d_model": "x"})


def test_search_overrides_are_validated_in_one_place():
    defaults = SearchConfig(beam_size=5, n_best=1)
    assert defaults.with_overrides(beam_size=None, n_best=None) is defaults
    assert defaults.with_overrides(beam_size=3, n_best=2).model_dump() == {
        **defaults.model_dump(),
        "beam_size": 3,
        "n_best": 2,
    }
    for given, key, message in [
        ({"n_best": 6}, "n_best", "n_best: must not exceed beam_size (5)"),
        ({"beam_size": 0}, "beam_size", "beam_size: Input should be greater than or equal to 1"),
        ({"length_penalty": -1.0}, "length_penalty", "length_penalty"),
        ({"colour": "red"}, "colour", "colour: unknown search option"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)) as caught:
            defaults.with_overrides(**given)
        assert caught.value.key == key


def test_model_configs_declare_their_capabilities():
    transformer = TransformerConfig(arch="transformer", max_positions=64)
    recurrent = [RNNConfig(arch="rnn", cell="gru"), AttentionRNNConfig(arch="rnn_attention")]
    assert transformer.position_limit == 64 and transformer.preferred_default
    assert all(c.position_limit is None and not c.preferred_default for c in recurrent)
    assert transformer.export_formats == ("onnx", "ctranslate2")
    assert all(c.export_formats == ("onnx",) for c in recurrent)
