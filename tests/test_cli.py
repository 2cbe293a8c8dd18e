"""End to end through the `nmt` command: train each architecture a few steps on a slice of
Multi30k, then translate and evaluate with the bundle, and check every bad input ends as one
line on stderr with a non-zero exit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nmt.bundle import load_bundle
from tests.conftest import (
    TINY_MODELS,
    assert_one_line_error,
    run_nmt,
    tiny_recipe,
    write_crafted_checkpoint,
    write_recipe,
)


@pytest.mark.parametrize("arch", list(TINY_MODELS))
def test_trained_bundle_translates_and_evaluates(arch, trained_bundles, tiny_corpus):
    bundle = trained_bundles[arch]
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["architecture"] == arch
    assert meta["training"]["steps"] == 6
    assert "nrefs:1|case:mixed" in meta["scores"]["valid"]["signature"]
    assert (bundle.parent / "metrics.png").stat().st_size > 0

    lines = (tiny_corpus / "test_2016_flickr.en").read_text().splitlines()[:10]
    lines.insert(3, "")  # an empty line stays an empty line, in its place
    out = run_nmt(
        "translate",
        "--model",
        str(bundle),
        "--beam-size",
        "3",
        "--batch-size",
        "4",
        stdin="\n".join(lines) + "\n",
    )
    translations = out.stdout.split("\n")[:-1]
    assert len(translations) == len(lines)
    assert translations[3] == ""

    result = run_nmt(
        "evaluate",
        "--model",
        str(bundle),
        "--src",
        str(tiny_corpus / "test_2016_flickr.en"),
        "--ref",
        str(tiny_corpus / "test_2016_flickr.de"),
        "--json",
    )
    report = json.loads(result.stdout)
    assert report["sentences"] == 24
    for metric in ("bleu", "chrf", "ter"):
        assert report[metric] >= 0.0 and metric in report["signatures"]
    assert report["signatures"]["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert report["lowercase"]["signatures"]["bleu"].startswith("nrefs:1|case:lc")


def test_batched_translation_equals_one_at_a_time(trained_bundles, tiny_corpus):
    bundle = trained_bundles["transformer"]
    text = "\n".join((tiny_corpus / "test_2016_flickr.en").read_text().splitlines()[:12]) + "\n"
    batched = run_nmt("translate", "--model", str(bundle), "--batch-size", "12", stdin=text).stdout
    single = run_nmt("translate", "--model", str(bundle), "--batch-size", "1", stdin=text).stdout
    assert batched == single


def test_n_best_lists(trained_bundles):
    out = run_nmt(
        "translate",
        "--model",
        str(trained_bundles["lstm_attention"]),
        "--beam-size",
        "3",
        "--n-best",
        "3",
        stdin="A man.\n\nTwo dogs play in the snow.\n",
    ).stdout.splitlines()
    assert len(out) == 9, out  # three lines for every input, the empty one too
    scores = [float(line.rsplit("\t", 1)[1]) for line in out[:3]]
    assert scores == sorted(scores, reverse=True)
    assert all(line.startswith("\t") for line in out[3:6])


@pytest.mark.parametrize("arch", ["transformer", "gru_attention"])
def test_alignments_follow_each_line_after_a_tab(trained_bundles, arch):
    """TEXT<TAB>ALIGNMENT, the alignment in Pharaoh format over the line's words; the text is
    what `translate` gives without --alignments."""
    bundle = str(trained_bundles[arch])
    text = "A man.\nTwo dogs play in the snow.\n\n"
    plain = run_nmt("translate", "--model", bundle, stdin=text).stdout.splitlines()
    lines = run_nmt("translate", "--model", bundle, "--alignments", stdin=text).stdout.splitlines()
    assert len(lines) == 3
    for source, line, expected in zip(text.splitlines(), lines, plain, strict=True):
        translation, alignment = line.split("\t")
        assert translation == expected
        links = [tuple(map(int, link.split("-"))) for link in alignment.split()]
        assert [tgt for _, tgt in links] == list(range(len(translation.split())))
        assert all(0 <= src < len(source.split()) for src, _ in links)
    assert lines[2] == "\t"  # an empty line: no words, no links


def test_translate_with_workers_gives_the_same_lines(trained_bundles):
    bundle = str(trained_bundles["transformer"])
    text = "A man.\n\nTwo dogs play in the snow.\nA girl.\nA red car.\n"
    plain = run_nmt("translate", "--model", bundle, "--batch-size", "1", stdin=text).stdout
    assert (
        run_nmt("translate", "--model", bundle, "--batch-size", "1", "--workers", "2", stdin=text).stdout
        == plain
    )
    result = run_nmt("translate", "--model", bundle, "--workers", "0", stdin=text, check=False)
    assert_one_line_error(result, "--workers", "at least 1")


def test_alignments_and_attention_of_a_model_without_attention_are_one_line(trained_bundles, tmp_path):
    bundle = str(trained_bundles["lstm"])
    result = run_nmt("translate", "--model", bundle, "--alignments", stdin="A man.\n", check=False)
    assert_one_line_error(result, "--alignments", "without attention")
    result = run_nmt(
        "attention", "--model", bundle, "--text", "A man.", "--out", str(tmp_path / "a.png"), check=False
    )
    assert_one_line_error(result, "without attention")
    assert not (tmp_path / "a.png").exists()


def test_attention_heatmap_is_written(trained_bundles, tmp_path):
    out = tmp_path / "attention.png"
    args = ["attention", "--model", str(trained_bundles["lstm_attention"]), "--text", "Two dogs play."]
    result = run_nmt(*args, "--out", str(out))
    assert result.stdout.splitlines()[-1] == str(out)
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and out.stat().st_size > 5000


def test_average_checkpoints_into_a_bundle(trained_bundles, tmp_path):
    run_dir = trained_bundles["transformer"].parent
    out = tmp_path / "averaged"
    result = run_nmt(
        "average", "--run", str(run_dir), "--last", "2", "--any-step", "--out", str(out), "--dtype", "float16"
    )
    assert Path(result.stdout.strip()) == out
    bundle = load_bundle(out)
    assert bundle.meta["dtype"] == "float16"
    assert bundle.meta["training"]["averaged"] == ["step-00000004.pt", "step-00000006.pt"]
    run_nmt("translate", "--model", str(out), stdin="A dog runs.\n")


def test_average_refuses_a_crafted_checkpoint_without_running_it(trained_bundles, tmp_path):
    real = trained_bundles["transformer"].parent / "checkpoints" / "step-00000006.pt"
    crafted = write_crafted_checkpoint(tmp_path / "step-00000001.pt", tmp_path / "pwned")
    out = tmp_path / "averaged"
    result = run_nmt("average", "--checkpoints", str(crafted), str(real), "--out", str(out), check=False)
    assert_one_line_error(result, str(crafted), "not a plain-tensor checkpoint")
    assert not (tmp_path / "pwned").exists() and not out.exists()


def test_resume_refuses_a_crafted_checkpoint_without_running_it(trained_bundles, tiny_corpus, tmp_path):
    run_dir = shutil.copytree(trained_bundles["transformer"].parent, tmp_path / "run")
    crafted = write_crafted_checkpoint(run_dir / "checkpoints" / "step-99999999.pt", tmp_path / "pwned")
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_corpus, run_dir, "transformer", max_steps=8))
    result = run_nmt("train", "--config", str(recipe), "--resume", check=False)
    # training logs its data summary first; the error is the last line, and one line
    assert result.returncode != 0 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert str(crafted) in last and "not a plain-tensor checkpoint" in last, result.stderr
    assert not (tmp_path / "pwned").exists()


def test_a_bundle_naming_a_file_outside_itself_is_one_line(trained_bundles, tmp_path):
    bundle = shutil.copytree(trained_bundles["lstm"], tmp_path / "bundle")
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["tokenizer"]["src"] = "../../../etc/hostname"
    (bundle / "bundle.json").write_text(json.dumps(meta))
    result = run_nmt("translate", "--model", str(bundle), stdin="", check=False)
    assert_one_line_error(result, "tokenizer.src", "../../../etc/hostname", "outside the bundle")


def test_data_download_from_a_local_copy(multi30k, tmp_path):
    result = run_nmt(
        "data",
        "download",
        "multi30k",
        "--out",
        str(tmp_path),
        "--base-url",
        multi30k.as_uri() + "/",
        "--langs",
        "de",
    )
    assert len(result.stdout.splitlines()) == 3
    assert (tmp_path / "val.de.gz").read_bytes() == (multi30k / "val.de.gz").read_bytes()


def test_every_subcommand_has_help():
    for command in (
        ["train"],
        ["average"],
        ["translate"],
        ["evaluate"],
        ["compare"],
        ["export"],
        ["attention"],
        ["data", "download"],
    ):
        assert "usage:" in run_nmt(*command, "--help").stdout


@pytest.fixture
def recipe_dict(tiny_corpus, tmp_path):
    return tiny_recipe(tiny_corpus, tmp_path / "run")


def train_error(tmp_path, recipe):
    return run_nmt("train", "--config", str(write_recipe(tmp_path / "bad.yaml", recipe)), check=False)


def test_train_rejects_unknown_keys_and_wrong_types(tmp_path, recipe_dict):
    recipe_dict["model"]["layers_count"] = 3
    assert_one_line_error(train_error(tmp_path, recipe_dict), "model.layers_count", "unknown key")
    del recipe_dict["model"]["layers_count"]
    recipe_dict["train"]["batch_tokens"] = "many"
    assert_one_line_error(train_error(tmp_path, recipe_dict), "train.batch_tokens", "integer")


def test_train_rejects_missing_misaligned_and_empty_files(tmp_path, recipe_dict, tiny_corpus):
    recipe_dict["data"]["train"]["src"] = str(tmp_path / "nope.en")
    assert_one_line_error(train_error(tmp_path, recipe_dict), "nope.en")

    short = tmp_path / "short.en"
    short.write_text("one line\n")
    recipe_dict["data"]["train"]["src"] = str(short)
    assert_one_line_error(train_error(tmp_path, recipe_dict), "short.en", "train.de")

    empty = tmp_path / "empty.en"
    empty.write_text("")
    recipe_dict["data"]["train"]["src"] = str(empty)
    assert_one_line_error(train_error(tmp_path, recipe_dict), "empty.en")


def test_missing_recipe_and_bad_override(tmp_path, recipe_dict):
    assert_one_line_error(run_nmt("train", "--config", str(tmp_path / "none.yaml"), check=False), "none.yaml")
    path = write_recipe(tmp_path / "ok.yaml", recipe_dict)
    result = run_nmt("train", "--config", str(path), "--set", "train.max_steps", check=False)
    assert_one_line_error(result, "KEY=VALUE")


def test_usage_errors_are_one_line():
    assert_one_line_error(run_nmt("translate", check=False), "--model")
    assert_one_line_error(
        run_nmt("translate", "--model", "x", "--beam-size", "two", check=False), "--beam-size"
    )


def test_bad_bundles(trained_bundles, tmp_path):
    assert_one_line_error(
        run_nmt("translate", "--model", str(tmp_path / "nothing"), stdin="", check=False), "not found"
    )

    broken = tmp_path / "broken"
    shutil.copytree(trained_bundles["lstm"], broken)
    (broken / "weights.safetensors").unlink()
    assert_one_line_error(
        run_nmt("translate", "--model", str(broken), stdin="", check=False), "weights.safetensors"
    )

    edited = tmp_path / "edited"
    shutil.copytree(trained_bundles["lstm"], edited)
    data = bytearray((edited / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (edited / "weights.safetensors").write_bytes(bytes(data))
    assert_one_line_error(run_nmt("translate", "--model", str(edited), stdin="", check=False), "version")


def test_evaluate_rejects_misaligned_and_empty_files(trained_bundles, tiny_corpus, tmp_path):
    ref = tmp_path / "ref.de"
    ref.write_text("nur eine Zeile\n")
    result = run_nmt(
        "evaluate",
        "--model",
        str(trained_bundles["lstm"]),
        "--src",
        str(tiny_corpus / "val.en"),
        "--ref",
        str(ref),
        check=False,
    )
    assert_one_line_error(result, "val.en", "ref.de")
    ref.write_text("")
    result = run_nmt(
        "evaluate", "--model", str(trained_bundles["lstm"]), "--src", str(ref), "--ref", str(ref), check=False
    )
    assert_one_line_error(result, "ref.de")


def test_train_refuses_to_overwrite_a_run(trained_bundles, tiny_corpus):
    run_dir = trained_bundles["transformer"].parent
    recipe = write_recipe(run_dir.parent / "again.yaml", tiny_recipe(tiny_corpus, run_dir, "transformer"))
    assert_one_line_error(run_nmt("train", "--config", str(recipe), check=False), "--resume")


def test_overlong_input_is_truncated_not_a_crash(trained_bundles):
    long_line = " ".join(["dog"] * 1500) + "\n"
    result = run_nmt(
        "translate",
        "--model",
        str(trained_bundles["transformer"]),
        "--beam-size",
        "1",
        stdin="A man.\n" + long_line,
    )
    assert len(result.stdout.split("\n")[:-1]) == 2
    assert "translating its first 1023" in result.stderr


def test_input_that_is_not_utf8_is_one_line(trained_bundles):
    result = subprocess.run(
        [sys.executable, "-m", "nmt", "translate", "--model", str(trained_bundles["lstm"])],
        input=b"caf\xe9\n",
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.decode().strip().splitlines() == [
        "nmt translate: error: input is not UTF-8 (byte 3)"
    ]


def test_evaluate_records_its_scores_in_the_bundle(trained_bundles, tiny_corpus, tmp_path):
    bundle = shutil.copytree(trained_bundles["transformer"], tmp_path / "bundle")
    version = load_bundle(bundle).version
    src, ref = str(tiny_corpus / "val.en"), str(tiny_corpus / "val.de")
    printed = json.loads(
        run_nmt(
            "evaluate", "--model", str(bundle), "--src", src, "--ref", ref, "--json", "--record", "val"
        ).stdout
    )
    stored = load_bundle(bundle).meta["scores"]["val"]  # loads: the version still matches
    assert load_bundle(bundle).version == version
    assert stored["bleu"] == printed["bleu"] and stored["sentences"] == 24 and stored["src"] == src
    assert stored["signatures"]["bleu"].startswith("nrefs:1|")
