"""Tokenizer training and use, on a small in-memory corpus."""

from __future__ import annotations

import pytest

from nmt.config import TokenizerConfig
from nmt.errors import DataError
from nmt.specials import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from nmt.tokenizer import Tokenizer, train_tokenizers

EN = [
    "A man in an orange hat starring at something.",
    "A little girl climbing into a wooden playhouse.",
    "Two young, white males are outside near many bushes.",
    "A group of people stand in front of an igloo.",
    "A boy smiles while riding a red bicycle.",
    "Several men in hard hats are operating a giant pulley system.",
] * 20
DE = [
    "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.",
    "Ein kleines Mädchen klettert in ein Spielhaus aus Holz.",
    "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.",
    "Eine Gruppe von Menschen steht vor einem Iglu.",
    "Ein Junge lächelt, während er ein rotes Fahrrad fährt.",
    "Mehrere Männer mit Schutzhelmen bedienen ein Antriebsradsystem.",
] * 20
SMALL = TokenizerConfig(vocab_size=120)


@pytest.fixture(scope="module")
def joint(tmp_path_factory) -> Tokenizer:
    src, tgt = train_tokenizers(SMALL, EN, DE, tmp_path_factory.mktemp("spm"), "en", "de")
    assert src is tgt
    return src


def test_special_ids(joint: Tokenizer) -> None:
    processor = joint.processor
    assert [processor.pad_id(), processor.unk_id(), processor.bos_id(), processor.eos_id()] == [
        PAD_ID,
        UNK_ID,
        BOS_ID,
        EOS_ID,
    ]
    assert joint.vocab_size <= SMALL.vocab_size


def test_encode_adds_no_specials_and_round_trips(joint: Tokenizer) -> None:
    texts = [EN[1], DE[1], ""]
    ids = joint.encode(texts)
    assert ids[2] == []
    assert not {PAD_ID, BOS_ID, EOS_ID} & {i for seq in ids for i in seq}
    assert joint.decode(ids) == texts


def test_decode_drops_specials_and_stops_at_eos(joint: Tokenizer) -> None:
    [ids] = joint.encode([EN[0]])
    assert joint.decode([[BOS_ID, *ids, EOS_ID, PAD_ID, PAD_ID]]) == [EN[0]]
    assert joint.decode([[*ids, EOS_ID, *ids]]) == [EN[0]]


def test_encode_rejects_a_single_string(joint: Tokenizer) -> None:
    with pytest.raises(TypeError):
        joint.encode(EN[0])  # type: ignore[arg-type]


def test_load_gives_the_same_tokenizer(joint: Tokenizer) -> None:
    loaded = Tokenizer.load(joint.path)
    assert loaded.vocab_size == joint.vocab_size
    assert loaded.encode(EN[:5]) == joint.encode(EN[:5])


def test_joint_writes_one_file_per_side_otherwise(tmp_path) -> None:
    train_tokenizers(SMALL, EN, DE, tmp_path / "joint", "en", "de")
    assert sorted(p.name for p in (tmp_path / "joint").iterdir()) == ["spm.model"]

    cfg = TokenizerConfig(vocab_size=80, joint=False, type="bpe")
    src, tgt = train_tokenizers(cfg, EN, DE, tmp_path / "split", "en", "de")
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == ["spm.de.model", "spm.en.model"]
    assert src.path.name == "spm.en.model" and tgt.path.name == "spm.de.model"
    assert src.decode(src.encode(EN[:3])) == EN[:3]
    assert tgt.decode(tgt.encode(DE[:3])) == DE[:3]


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_training_is_deterministic(tmp_path, model_type: str) -> None:
    cfg = TokenizerConfig(vocab_size=120, type=model_type)
    first, _ = train_tokenizers(cfg, EN, DE, tmp_path / "a", "en", "de")
    second, _ = train_tokenizers(cfg, EN, DE, tmp_path / "b", "en", "de")
    assert first.path.read_bytes() == second.path.read_bytes()


def test_load_missing_or_invalid_model_names_the_file(tmp_path) -> None:
    with pytest.raises(DataError, match="nowhere.model"):
        Tokenizer.load(tmp_path / "nowhere.model")
    bad = tmp_path / "bad.model"
    bad.write_text("not a model")
    with pytest.raises(DataError, match="bad.model"):
        Tokenizer.load(bad)


def test_training_on_no_text_raises_data_error(tmp_path) -> None:
    with pytest.raises(DataError, match="spm.model"):
        train_tokenizers(SMALL, [], [], tmp_path, "en", "de")
