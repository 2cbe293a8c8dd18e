"""ONNX export and the ONNX Runtime backend: each architecture's tiny bundle is exported, checked
against PyTorch step by step and through the whole beam search, and run through the `nmt` command;
exports that are missing, incomplete or made from another bundle version are refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch

from nmt.backends.onnx import OnnxModel
from nmt.bundle import load_bundle, save_bundle
from nmt.data import collate_source
from nmt.errors import BundleError, NoAttention
from nmt.export.onnx import export_model, export_onnx
from nmt.onnx_format import DECODER_FILE, ENCODER_FILE, EXPORT_DIR, EXPORT_FILE, EXPORT_FORMAT
from nmt.search import beam_search
from nmt.specials import BOS_ID
from nmt.translator import Translator
from tests.conftest import ROOT, TINY_MODELS, assert_one_line_error, run_nmt
from tests.models.conftest import VARIANTS, make_batch, make_config, make_model

ARCHS = list(TINY_MODELS)

# the graphs' names for the tiny models of tests/conftest.py (2 Transformer decoder layers; the
# LSTM feeds the source summary at every step; the attention LSTM uses input feeding, and so does
# the attention GRU, whose state has no cell state "c")
ENCODER_OUTPUTS = {
    "transformer": ["memory.src_mask"]
    + [f"memory.cross_{kv}{i}" for i in range(2) for kv in "kv"]
    + [f"state.self_{kv}{i}" for i in range(2) for kv in "kv"],
    "lstm": [
        "memory.src_mask",
        "memory.context",
        "memory.context_gates",
        "state.h",
        "state.c",
        "encoder_outputs",
    ],
    "lstm_attention": [
        "memory.src_mask",
        "memory.encoder_outputs",
        "memory.keys",
        "state.h",
        "state.c",
        "state.feed",
    ],
    "gru_attention": ["memory.src_mask", "memory.encoder_outputs", "memory.keys", "state.h", "state.feed"],
}
STEP_INPUTS = [
    "prev_tokens",
    "beam_indices",
    "k",
    "want_log_probs",
    "vocabulary",
    "outside",
    "outside_log_weight",
]
ATTENDING_STEP_INPUTS = [*STEP_INPUTS, "want_attention"]  # models with attention switch it on
DECODER_INPUTS = {
    # the memory once per sentence: the rows computed may be some of its grid (`Slots`)
    "transformer": [*ATTENDING_STEP_INPUTS, "grid_rows", "row_slots", *ENCODER_OUTPUTS["transformer"]],
    # src_mask is never read; the context's share of the first input product comes computed
    "lstm": [*STEP_INPUTS, "memory.context", "memory.context_gates", "state.h", "state.c"],
    "lstm_attention": [*ATTENDING_STEP_INPUTS, "grid_rows", "row_slots", *ENCODER_OUTPUTS["lstm_attention"]],
    "gru_attention": [*ATTENDING_STEP_INPUTS, "grid_rows", "row_slots", *ENCODER_OUTPUTS["gru_attention"]],
}


def _decoder_outputs(arch: str) -> list[str]:
    states = [name.removeprefix("state.") for name in DECODER_INPUTS[arch] if name.startswith("state.")]
    attention = ["attention"] if arch != "lstm" else []
    return (
        ["log_probs", "top_log_probs", "top_tokens", "eos_log_probs"]
        + [f"new_state.{key}" for key in states]
        + attention
    )


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # OnnxModel's sessions take PyTorch's thread count
    yield
    torch.set_num_threads(threads)


def _copy(bundle: Path, folder: Path) -> Path:
    """A copy of a bundle, so exports never touch the bundles other test modules share."""
    return Path(shutil.copytree(bundle, folder / bundle.name))


@pytest.fixture(scope="module")
def exported(trained_bundles, tmp_path_factory) -> dict[str, Path]:
    """A copy of each tiny bundle with its fp32 ONNX export."""
    bundles = {}
    for arch, path in trained_bundles.items():
        bundles[arch] = _copy(path, tmp_path_factory.mktemp(f"onnx-{arch}"))
        export_onnx(load_bundle(bundles[arch]))
    return bundles


@pytest.fixture(scope="module")
def sentences(tiny_corpus) -> list[str]:
    return (tiny_corpus / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()[:10]


@pytest.mark.parametrize("arch", ARCHS)
def test_export_is_valid_onnx_and_records_the_bundle(arch, exported):
    bundle = load_bundle(exported[arch])
    folder = bundle.path / EXPORT_DIR
    meta = json.loads((folder / EXPORT_FILE).read_text(encoding="utf-8"))
    assert meta["version"] == bundle.version
    assert meta["format"] == EXPORT_FORMAT and meta["opset"] >= 17 and meta["quantization"] is None
    # the models with attention take the memory once per sentence (the plain LSTM's is its context)
    assert meta["memory_per_sentence"] == (arch != "lstm")
    assert meta["check"]["max_abs_log_prob_difference"]["float32"] < 1e-4
    if arch == "lstm":
        assert meta["check"]["max_abs_attention_difference"] is None
    else:
        assert meta["check"]["max_abs_attention_difference"]["float32"] < 1e-4
    for graph, name in (("encoder", ENCODER_FILE), ("decoder", DECODER_FILE)):
        model = onnx.load(str(folder / name))
        onnx.checker.check_model(model, full_check=True)
        assert [value.name for value in model.graph.input] == meta[graph]["inputs"]
        assert [value.name for value in model.graph.output] == meta[graph]["outputs"]
    assert meta["encoder"]["inputs"] == ["src", "src_lengths"]
    assert meta["encoder"]["outputs"] == ENCODER_OUTPUTS[arch]
    assert meta["decoder"]["inputs"] == DECODER_INPUTS[arch]
    assert meta["decoder"]["outputs"] == _decoder_outputs(arch)
    shapes = meta["encoder"]["shapes"] | meta["decoder"]["shapes"]
    assert shapes["src"] == ["batch", "src_len"] and shapes["eos_log_probs"] == ["batch"]
    assert shapes["top_tokens"] == ["batch", "k"] and shapes["k"] == [] and shapes["want_log_probs"] == []
    assert shapes["log_probs"] == ["log_prob_rows", bundle.tgt_tokenizer.vocab_size]  # 0 rows unless wanted
    if arch == "transformer":  # the caches grow by one position per step; the encoder's are empty
        # the state given is the previous step's rows, which beam_indices picks from
        assert shapes["state.self_k0"][0] == "state_batch" and shapes["state.self_k0"][2] == "cache_len"
        assert shapes["new_state.self_k0"][0] == "batch"
        assert meta["decoder"]["shapes"]["memory.cross_k0"][0] == "memory_batch"
        assert shapes["new_state.self_k0"][2] == "new_cache_len"
        assert meta["encoder"]["shapes"]["memory.cross_v1"][2] == "src_len"
        assert meta["encoder"]["shapes"]["state.self_v1"][2] == 0


def _max_step_difference(torch_model, onnx_model, src, src_lengths, steps: int) -> float:
    """Encode with both, then decode `steps` steps on the same tokens (PyTorch's argmax):
    the largest |log p| difference, or attention difference for a model with attention; memory
    and states are compared on the way."""
    with torch.inference_mode():
        memory, state = torch_model.encode(src, src_lengths)
        onnx_memory, onnx_state = onnx_model.encode(src, src_lengths)
        assert onnx_memory.keys() == memory.keys() and onnx_state.keys() == state.keys()
        for key, value in (memory | state).items():
            got = {**onnx_memory, **onnx_state}[key]  # OrtTensors read as torch tensors
            assert got.shape == value.shape and got.dtype == value.dtype, key
            assert (
                torch.allclose(got, value, atol=1e-5)
                if value.is_floating_point()
                else torch.equal(got, value)
            )
        prev_tokens = torch.full((src.size(0),), BOS_ID)
        worst = 0.0
        assert onnx_model.attends == torch_model.attends
        for _ in range(steps):
            if torch_model.attends:  # the attention too, from both ways of asking the graph
                log_probs, state, attention = torch_model.decode_step_with_attention(
                    prev_tokens, memory, state
                )
                *_, top_k_attention = onnx_model.decode_top_k_with_attention(
                    prev_tokens, onnx_memory, onnx_state, 3
                )
                onnx_log_probs, onnx_state, onnx_attention = onnx_model.decode_step_with_attention(
                    prev_tokens, onnx_memory, onnx_state
                )
                assert onnx_attention.shape == attention.shape == src.shape
                for got in (onnx_attention, top_k_attention):
                    worst = max(worst, (attention - got).abs().max().item())
            else:
                log_probs, state = torch_model.decode_step(prev_tokens, memory, state)
                onnx_log_probs, onnx_state = onnx_model.decode_step(prev_tokens, onnx_memory, onnx_state)
            assert onnx_log_probs.dtype == torch.float32 and onnx_log_probs.shape == log_probs.shape
            worst = max(worst, (log_probs - onnx_log_probs).abs().max().item())
            prev_tokens = log_probs.argmax(dim=-1)
    return worst


@pytest.mark.parametrize("arch", ARCHS)
def test_step_log_probs_match_pytorch(arch, exported, sentences):
    bundle = load_bundle(exported[arch])
    onnx_model = OnnxModel.from_bundle(bundle)
    src, src_lengths = collate_source(bundle.src_tokenizer.encode(sentences[:6]))
    assert len(set(src_lengths.tolist())) > 3  # padding in most rows
    difference = _max_step_difference(bundle.load_model(), onnx_model, src, src_lengths, steps=8)
    print(f"\n{arch}: max |log p| difference over 8 steps, 6 sentences: {difference:.2e}")
    assert difference < 1e-4
    # a batch of one-token sources (EOS alone): no shape-1 special case was baked into the graphs
    src, src_lengths = collate_source([[], []])
    assert _max_step_difference(bundle.load_model(), onnx_model, src, src_lengths, steps=3) < 1e-4


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_model_variant_exports_exactly(variant, tmp_path):
    """Random-weight tiny models of every variant (each cell, 1-layer unidirectional, post-norm, untied...)."""
    arch, overrides = VARIANTS[variant]
    model = make_model(make_config(arch, **overrides))
    meta = export_model(model, tmp_path)
    assert meta["check"]["max_abs_log_prob_difference"]["float32"] < 1e-4
    batch = make_batch(src_lengths=[9, 1, 6, 3, 2], tgt_lengths=[1] * 5, seed=5)
    assert _max_step_difference(model, OnnxModel(tmp_path), batch.src, batch.src_lengths, steps=5) < 1e-4


def _search_both(bundle_path, sentences, device="cpu", **options):
    """(PyTorch's n-best lists, ONNX Runtime's) for `sentences` with the bundle's search options
    changed by `options`, both on `device`."""
    bundle = load_bundle(bundle_path)
    src, src_lengths = collate_source(bundle.src_tokenizer.encode(sentences))
    src, src_lengths = src.to(device), src_lengths.to(device)
    search = bundle.search.model_copy(update=options)
    cap = bundle.model_config.position_limit
    expected = beam_search(bundle.load_model(device), src, src_lengths, search, cap)
    return expected, beam_search(OnnxModel.from_bundle(bundle, device), src, src_lengths, search, cap)


@pytest.mark.parametrize("arch", ARCHS)
def test_beam_search_is_token_identical(arch, exported, sentences):
    """The same best translation, token for token, and the same n-best scores. Lower in the n-best
    lists a near-tie may go either way: two candidates an exact tie in one engine's numbers and
    1e-6 apart in the other's (the tiny LSTM has one at 3 hypotheses of 29 tokens), which shows
    as another hypothesis of the same score (within 1e-4) at that rank."""
    expected, got = _search_both(exported[arch], sentences, beam_size=3, n_best=3)
    assert [nbest[0].tokens for nbest in got] == [nbest[0].tokens for nbest in expected]
    for nbest, expected_nbest in zip(got, expected, strict=True):
        assert len(nbest) == len(expected_nbest)
        for h, e in zip(nbest, expected_nbest, strict=True):
            assert h.score == pytest.approx(e.score, abs=1e-4)


@pytest.mark.parametrize("shipped", ["transformer-en-de", "lstm-attention-en-de"])
def test_finished_hypotheses_are_not_decoded_again(shipped, exported, multi30k, tmp_path):
    """The decoder graph of a model with its memory once per sentence (the Transformer, the
    attention RNNs) computes only the rows the search still extends (its finished hypotheses
    stay in their beams until their sentence is decided, with nothing to compute), and the
    search comes out as PyTorch's, which computes every row. The plain LSTM computes every row."""
    from nmt.data import read_lines

    # a trained model: its beams end at different steps
    bundle = load_bundle(_copy(ROOT / "models" / shipped, tmp_path))
    export_onnx(bundle)
    sentences = read_lines(multi30k / "test_2016_flickr.en.gz")[:16]
    model = OnnxModel.from_bundle(bundle)
    assert model.skips_finished  # the memory once per sentence: any rows of its grid
    assert not OnnxModel.from_bundle(load_bundle(exported["lstm"])).skips_finished
    computed: list[tuple[int, int]] = []  # (rows computed, places in the grid) of each step
    plain = model._run

    def counting(session, inputs, outputs):
        if session is model.decoder:
            computed.append((inputs["prev_tokens"].shape()[0], inputs["grid_rows"].shape()[0]))
        return plain(session, inputs, outputs)

    model._run = counting  # type: ignore[method-assign]
    src, src_lengths = collate_source(bundle.src_tokenizer.encode(sentences))
    search = bundle.search.model_copy(update={"beam_size": 4, "n_best": 4})  # decided late: many finish
    cap = bundle.model_config.position_limit
    got = beam_search(model, src, src_lengths, search, cap)
    expected = beam_search(bundle.load_model(), src, src_lengths, search, cap)
    assert any(rows < places for rows, places in computed), computed
    assert [nbest[0].tokens for nbest in got] == [nbest[0].tokens for nbest in expected]
    for nbest, expected_nbest in zip(got, expected, strict=True):
        assert [h.score for h in nbest] == pytest.approx([h.score for h in expected_nbest], abs=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
@pytest.mark.parametrize("arch", ARCHS)
def test_on_cuda_the_state_stays_on_the_gpu_and_the_search_matches_pytorch(arch, exported, sentences):
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.fail("a CUDA device, but onnxruntime without CUDAExecutionProvider: install onnxruntime-gpu")
    bundle = load_bundle(exported[arch])
    model = OnnxModel.from_bundle(bundle, "cuda")
    assert model.decoder.get_providers()[0] == "CUDAExecutionProvider"
    src, src_lengths = collate_source(bundle.src_tokenizer.encode(sentences[:3]))
    memory, state = model.encode(src.cuda(), src_lengths.cuda())
    for _ in range(2):  # the state a step leaves is bound on the GPU for the next one
        _, _, _, state = model.decode_top_k(torch.full((src.size(0),), BOS_ID), memory, state, 3)
        assert {value.device_name().lower() for value in state.ort_values.values()} == {"cuda"}
    expected, got = _search_both(exported[arch], sentences, "cuda", beam_size=3, n_best=3)
    # the same hypotheses with the same scores; two cuDNN LSTM kernels may order near-ties (the
    # untrained tiny models' repeated tokens) differently, so the lists are compared as maps
    for nbest, expected_nbest in zip(got, expected, strict=True):
        assert nbest[0].score == pytest.approx(expected_nbest[0].score, abs=1e-4)
        scores = {tuple(h.tokens): h.score for h in nbest}
        expected_scores = {tuple(h.tokens): h.score for h in expected_nbest}
        for tokens in scores.keys() & expected_scores.keys():
            assert scores[tokens] == pytest.approx(expected_scores[tokens], abs=1e-4)
        assert len(scores.keys() & expected_scores.keys()) >= len(expected_scores) - 1


@pytest.mark.parametrize("arch", ARCHS)
def test_the_graph_reorders_beams_and_ranks_the_top_k_as_the_search_would(arch, exported, sentences):
    """decode_top_k after select_memory / select_state (applied inside the graphs) against the
    PyTorch model's decode_top_k after the same selections, in the model's memory layout: the
    memory of the models with attention keeps one row per sentence for its beams, the plain
    LSTM's one per beam."""
    bundle = load_bundle(exported[arch])
    model, onnx_model = bundle.load_model(), OnnxModel.from_bundle(bundle)
    assert onnx_model.memory_per_sentence == model.memory_per_sentence == (arch != "lstm")
    src, src_lengths = collate_source(bundle.src_tokenizer.encode(sentences[:4]))
    beam = 3
    expand = torch.arange(4).repeat_interleave(beam)
    # the memory's own rows: the sentences, or each sentence's rows once per beam
    memory_rows = torch.arange(4) if model.memory_per_sentence else expand
    reorders = [torch.tensor([2, 2, 1, 3, 5, 4, 8, 6, 6, 11, 9, 9]), torch.arange(12).flip(0) // beam * beam]
    with torch.inference_mode():
        memory, state = model.encode(src, src_lengths)
        memory, state = model.select_memory(memory, memory_rows), model.select_state(state, expand)
        onnx_memory, onnx_state = onnx_model.encode(src, src_lengths)
        onnx_memory, onnx_state = (
            onnx_model.select_memory(onnx_memory, memory_rows),
            onnx_model.select_state(onnx_state, expand),
        )
        prev_tokens = torch.full((12,), BOS_ID)
        for rows in [*reorders, None]:
            expected_best, expected_tokens, expected_eos, state = model.decode_top_k(
                prev_tokens, memory, state, beam
            )
            best, tokens, eos, onnx_state = onnx_model.decode_top_k(
                prev_tokens, onnx_memory, onnx_state, beam
            )
            assert torch.equal(tokens, expected_tokens)
            assert torch.allclose(best, expected_best, atol=1e-4)
            assert torch.allclose(eos, expected_eos, atol=1e-4)
            if rows is not None:
                state, onnx_state = model.select_state(state, rows), onnx_model.select_state(onnx_state, rows)
                prev_tokens = expected_tokens[rows, 0]
        # what the search does when sentences finish: keep the rows of sentences 1 and 3
        keep = torch.tensor([3, 4, 5, 9, 10, 11])
        kept_memory = torch.tensor([1, 3]) if model.memory_per_sentence else keep
        memory, state = model.select_memory(memory, kept_memory), model.select_state(state, keep)
        onnx_memory, onnx_state = (
            onnx_model.select_memory(onnx_memory, kept_memory),
            onnx_model.select_state(onnx_state, keep),
        )
        log_probs, _ = model.decode_step(prev_tokens[keep], memory, state)
        onnx_log_probs, _ = onnx_model.decode_step(prev_tokens[keep], onnx_memory, onnx_state)
        assert (log_probs - onnx_log_probs).abs().max().item() < 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_n_gram_blocking_decodes_full_log_probs_identically(arch, exported, sentences):
    expected, got = _search_both(exported[arch], sentences, beam_size=3, no_repeat_ngram=2)
    assert [[h.tokens for h in nbest] for nbest in got] == [[h.tokens for h in nbest] for nbest in expected]


@pytest.mark.parametrize("arch", ARCHS)
def test_cli_export_then_translate_with_onnx_runtime(arch, trained_bundles, sentences, tmp_path):
    bundle = _copy(trained_bundles[arch], tmp_path)
    result = run_nmt("export", "--model", str(bundle), "--format", "onnx")
    assert Path(result.stdout.strip()) == bundle / EXPORT_DIR
    text = "\n".join(sentences[:3] + [""] + sentences[3:]) + "\n"
    args = ["translate", "--model", str(bundle), "--beam-size", "3", "--batch-size", "4"]
    with_torch = run_nmt(*args, "--backend", "torch", stdin=text).stdout
    with_onnx = run_nmt(*args, "--backend", "onnx", stdin=text).stdout
    assert with_onnx == with_torch
    assert len(with_onnx.split("\n")[:-1]) == len(sentences) + 1


@pytest.mark.parametrize("arch", ARCHS)
def test_int8_export_translates(arch, trained_bundles, sentences, tmp_path):
    bundle = load_bundle(_copy(trained_bundles[arch], tmp_path))
    meta = json.loads((export_onnx(bundle, quantize="int8") / EXPORT_FILE).read_text(encoding="utf-8"))
    assert meta["quantization"] == "int8" and meta["version"] == bundle.version
    ops = {node.op_type for node in onnx.load(str(bundle.path / EXPORT_DIR / DECODER_FILE)).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeLSTM"}
    model = OnnxModel.from_bundle(bundle)
    translator = Translator(model, bundle.src_tokenizer, bundle.tgt_tokenizer, bundle.search, batch_size=4)
    translations = translator.translate_best(sentences + [""])
    assert len(translations) == len(sentences) + 1 and translations[-1] == ""
    assert all(isinstance(text, str) for text in translations)


@pytest.mark.parametrize("arch", ARCHS)
def test_float16_export_keeps_memory_and_state_in_half_precision(
    arch, trained_bundles, exported, sentences, tmp_path
):
    """A float16 export (for GPUs; it runs on the CPU too, to check it): weights, memory and
    state in float16, what the search reads in float32; valid ONNX; translations as float32's."""
    bundle = load_bundle(_copy(trained_bundles[arch], tmp_path))
    meta = json.loads((export_onnx(bundle, quantize="float16") / EXPORT_FILE).read_text(encoding="utf-8"))
    assert meta["quantization"] == "float16" and meta["version"] == bundle.version
    differences = meta["check"]["max_abs_log_prob_difference"]
    assert differences["float32"] < 1e-3 and 0 < differences["float16"] < 0.05
    shortlisted = meta["check"]["max_abs_shortlist_log_prob_difference"]
    assert shortlisted["float16"] < 0.05  # the shortlist's head is kept
    for name in (ENCODER_FILE, DECODER_FILE):
        onnx.checker.check_model(str(bundle.path / EXPORT_DIR / name))  # its nodes sorted again
    graph = onnx.load(str(bundle.path / EXPORT_DIR / DECODER_FILE)).graph
    types = {value.name: value.type.tensor_type.elem_type for value in [*graph.input, *graph.output]}
    halves = [
        name
        for name in types
        if name.startswith(("memory.", "state.", "new_state.")) and name != "memory.src_mask"
    ]
    assert halves and {types[name] for name in halves} == {onnx.TensorProto.FLOAT16}
    kept = ("top_log_probs", "eos_log_probs", "log_probs", "outside_log_weight")
    assert {types[name] for name in kept} == {onnx.TensorProto.FLOAT}
    full = Translator.from_bundle(load_bundle(exported[arch]), backend="onnx", batch_size=4)
    half = Translator.from_bundle(bundle, backend="onnx", batch_size=4)
    # a model trained 6 steps is nearly uniform, so its beams swap on rounding: the best
    # hypotheses found score the same within float16's rounding instead
    expected = [nbest[0].score for nbest in full.translate(sentences)]
    found = [nbest[0].score for nbest in half.translate(sentences)]
    assert max(abs(a - b) for a, b in zip(found, expected, strict=True)) < 0.05


def test_pytorch_translates_in_half_precision_and_refuses_other_dtypes(exported, sentences):
    bundle = load_bundle(exported["transformer"])
    half = Translator.from_bundle(bundle, backend="torch", engine={"dtype": "float16"}, batch_size=4)
    assert next(half.model.parameters()).dtype == torch.float16
    expected = Translator.from_bundle(bundle, backend="torch", batch_size=4).translate_best(sentences)
    assert sum(a == b for a, b in zip(half.translate_best(sentences), expected, strict=True)) >= 8
    with pytest.raises(ValueError, match="dtype: float32 or float16, not 'int8'"):
        Translator.from_bundle(bundle, backend="torch", engine={"dtype": "int8"})


def test_a_float16_export_of_the_shipped_transformer_translates_as_float32(
    multi30k, default_exported, tmp_path
):
    """The trained Transformer in float16 on ONNX Runtime: the same translation as float32 for
    nearly every sentence (on the CPU; a GPU's float16 kernels round differently)."""
    from nmt.data import read_lines

    bundle = load_bundle(
        shutil.copytree(default_exported, tmp_path / "b", ignore=shutil.ignore_patterns("onnx", "ct2"))
    )
    export_onnx(bundle, quantize="float16")
    texts = read_lines(multi30k / "test_2016_flickr.en.gz")[:100]
    expected = Translator.from_bundle(load_bundle(default_exported), backend="onnx").translate_best(texts)
    same = sum(
        a == b
        for a, b in zip(
            Translator.from_bundle(bundle, backend="onnx").translate_best(texts), expected, strict=True
        )
    )
    assert same >= 95, same


# what ONNX Runtime's dynamic quantization makes of each cell: it has an int8 LSTM kernel
# (DynamicQuantizeLSTM) and none for GRU or RNN, which stay float32 beside the int8 MatMuls
INT8_RECURRENT_OPS = {"lstm": "DynamicQuantizeLSTM", "gru": "GRU", "rnn": "RNN"}


@pytest.mark.parametrize("cell", list(INT8_RECURRENT_OPS))
@pytest.mark.parametrize("variant", ["bahdanau-feed", "unidirectional-untied"])
def test_int8_export_of_every_cell(cell, variant, tmp_path):
    arch, overrides = VARIANTS[f"{cell}-{variant}"]
    model = make_model(make_config(arch, **overrides))
    meta = export_model(model, tmp_path, quantize="int8")
    assert meta["quantization"] == "int8" and meta["check"]["max_abs_log_prob_difference"]["int8"] < 0.05
    ops = {
        node.op_type
        for name in (ENCODER_FILE, DECODER_FILE)
        for node in onnx.load(str(tmp_path / name)).graph.node
    }
    assert INT8_RECURRENT_OPS[cell] in ops and "MatMulInteger" in ops
    assert not ops & ({"LSTM", "GRU", "RNN"} - {INT8_RECURRENT_OPS[cell]})
    batch = make_batch(src_lengths=[9, 1, 6], tgt_lengths=[1] * 3, seed=5)
    onnx_model = OnnxModel(tmp_path)
    with torch.inference_mode():
        _, expected_state = model.encode(batch.src, batch.src_lengths)
        memory, state = onnx_model.encode(batch.src, batch.src_lengths)
        assert state.keys() == expected_state.keys()  # (h, c) for the LSTM, h alone otherwise
        prev_tokens = torch.full((3,), BOS_ID)
        for _ in range(3):
            log_probs, state = onnx_model.decode_step(prev_tokens, memory, state)
            assert log_probs.shape == (3, model.tgt_vocab_size) and torch.isfinite(log_probs[:, 4:]).all()
            prev_tokens = log_probs.argmax(dim=-1)


def test_cli_int8_export_and_evaluate(trained_bundles, tiny_corpus, tmp_path):
    bundle = _copy(trained_bundles["lstm_attention"], tmp_path)
    run_nmt("export", "--model", str(bundle), "--format", "onnx", "--quantize", "int8")
    assert json.loads((bundle / EXPORT_DIR / EXPORT_FILE).read_text())["quantization"] == "int8"
    result = run_nmt(
        "evaluate",
        "--model",
        str(bundle),
        "--backend",
        "onnx",
        "--src",
        str(tiny_corpus / "test_2016_flickr.en"),
        "--ref",
        str(tiny_corpus / "test_2016_flickr.de"),
        "--json",
    )
    assert json.loads(result.stdout)["sentences"] == 24


def test_export_help_and_unknown_options_are_usage_errors():
    assert "--quantize {int8,float16}" in run_nmt("export", "--help").stdout
    for option in (["--quantize", "int4"], ["--format", "ct3"]):
        args = ["export", "--model", "x", "--format", "onnx", *option]
        assert_one_line_error(run_nmt(*args, check=False), option[0])


def _retrain(path: Path) -> None:
    """Give the bundle at `path` other weights, so another version, as retraining would; its
    onnx/ folder stays as it was (save_bundle replaces the whole folder, so it is put back)."""
    bundle = load_bundle(path)
    model = bundle.load_model()
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    kept = Path(shutil.copytree(path / EXPORT_DIR, path.parent / "kept-onnx"))
    meta = {key: bundle.meta[key] for key in ("name", "src_lang", "tgt_lang")}
    save_bundle(
        path, model, bundle.model_config, bundle.src_tokenizer, bundle.tgt_tokenizer, bundle.search, meta
    )
    shutil.copytree(kept, path / EXPORT_DIR)


def test_export_of_another_bundle_version_is_refused(trained_bundles, exported, tmp_path):
    bundle = _copy(exported["lstm"], tmp_path)
    old_version = load_bundle(bundle).version
    _retrain(bundle)
    new_version = load_bundle(bundle).version
    assert new_version != old_version
    result = run_nmt("translate", "--model", str(bundle), "--backend", "onnx", stdin="A dog.\n", check=False)
    assert_one_line_error(result, old_version, new_version, f"nmt export --model {bundle} --format onnx")

    other = _copy(trained_bundles["transformer"], tmp_path / "other")  # an export copied from another bundle
    shutil.copytree(exported["lstm"] / EXPORT_DIR, other / EXPORT_DIR)
    with pytest.raises(BundleError, match="exported from bundle version"):
        OnnxModel.from_bundle(load_bundle(other))


def test_export_of_an_older_format_is_refused(exported, tmp_path):
    bundle = _copy(exported["lstm"], tmp_path)
    meta_file = bundle / EXPORT_DIR / EXPORT_FILE
    meta_file.write_text(json.dumps(json.loads(meta_file.read_text()) | {"format": 1}))
    result = run_nmt("translate", "--model", str(bundle), "--backend", "onnx", stdin="A dog.\n", check=False)
    assert_one_line_error(result, "export format 1", f"run nmt export --model {bundle} --format onnx again")


def test_an_export_whose_decoder_takes_an_unknown_input_is_refused(exported, tmp_path):
    """A graph of another build of the same format (an input this code does not feed) is refused
    when loaded, in one line, not at the first step with ONNX Runtime's traceback."""
    bundle = _copy(exported["lstm"], tmp_path)
    decoder = bundle / EXPORT_DIR / DECODER_FILE
    model = onnx.load(str(decoder))
    model.graph.input.append(onnx.helper.make_tensor_value_info("surprise", onnx.TensorProto.FLOAT, [1]))
    onnx.save(model, str(decoder))
    result = run_nmt("translate", "--model", str(bundle), "--backend", "onnx", stdin="A dog.\n", check=False)
    assert_one_line_error(
        result, "cannot feed (surprise)", f"run nmt export --model {bundle} --format onnx again"
    )


def test_missing_or_incomplete_export_is_one_line(trained_bundles, exported, tmp_path):
    bundle = _copy(trained_bundles["transformer"], tmp_path)
    result = run_nmt("translate", "--model", str(bundle), "--backend", "onnx", stdin="A dog.\n", check=False)
    assert_one_line_error(result, f"run nmt export --model {bundle} --format onnx first")

    incomplete = _copy(exported["transformer"], tmp_path / "incomplete")
    (incomplete / EXPORT_DIR / DECODER_FILE).unlink()
    with pytest.raises(BundleError, match="incomplete ONNX export, decoder.onnx is missing; run nmt export"):
        OnnxModel.from_bundle(load_bundle(incomplete))
    (incomplete / EXPORT_DIR / ENCODER_FILE).write_bytes(b"not a graph")
    shutil.copyfile(
        exported["transformer"] / EXPORT_DIR / DECODER_FILE, incomplete / EXPORT_DIR / DECODER_FILE
    )
    with pytest.raises(BundleError, match="encoder.onnx: ONNX Runtime cannot load it"):
        OnnxModel.from_bundle(load_bundle(incomplete))


def test_the_export_made_for_the_shipped_bundle_translates_as_pytorch(multi30k, default_exported):
    """The default bundle's ONNX export (made where it is used, as the service does; git ignores
    it) gives PyTorch's translations."""
    from nmt.data import read_lines

    bundle = load_bundle(default_exported)
    texts = read_lines(multi30k / "test_2016_flickr.en.gz")[:24]
    expected = Translator.from_bundle(bundle).translate_best(texts)
    assert Translator.from_bundle(bundle, backend="onnx").translate_best(texts) == expected


@pytest.mark.parametrize("arch", ["transformer", "gru_attention"])
def test_alignments_from_onnx_runtime_are_pytorch_s(arch, exported, sentences):
    """Through the whole beam search (the ranking fast path with the attention fetched along)."""
    bundle = load_bundle(exported[arch])
    search = bundle.search.with_overrides(n_best=2)
    expected = Translator.from_bundle(bundle).translate(sentences, search, alignments=True)
    got = Translator.from_bundle(bundle, backend="onnx").translate(sentences, search, alignments=True)
    for nbest, onnx_nbest in zip(expected, got, strict=True):
        for translation, onnx_translation in zip(nbest, onnx_nbest, strict=True):
            assert onnx_translation.text == translation.text
            assert onnx_translation.alignment == translation.alignment
            assert translation.attention is not None and onnx_translation.attention is not None
            torch.testing.assert_close(
                onnx_translation.attention.weights, translation.attention.weights, atol=1e-5, rtol=0
            )


def _drop_attention_output(folder: Path) -> None:
    """Make an export look like one from before alignments: no want_attention input, no attention output."""
    path = folder / DECODER_FILE
    model = onnx.load(str(path))
    graph = model.graph
    kept = [node for node in graph.node if "attention" not in node.output]
    del graph.node[:]
    graph.node.extend(kept)
    for values in (graph.input, graph.output):
        for value in [v for v in values if v.name in ("want_attention", "attention")]:
            values.remove(value)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    meta = json.loads((folder / EXPORT_FILE).read_text(encoding="utf-8"))
    meta["decoder"]["inputs"].remove("want_attention")
    meta["decoder"]["outputs"].remove("attention")
    (folder / EXPORT_FILE).write_text(json.dumps(meta), encoding="utf-8")


def test_an_export_from_before_alignments_translates_and_says_it_has_no_attention(exported, tmp_path):
    from serving.registry import _translator
    from serving.settings import Settings

    bundle_path = _copy(exported["transformer"], tmp_path)
    _drop_attention_output(bundle_path / EXPORT_DIR)
    bundle = load_bundle(bundle_path)
    text = "A man.\nTwo dogs play in the snow.\n"
    expected = run_nmt("translate", "--model", str(bundle_path), stdin=text).stdout
    assert (
        run_nmt("translate", "--model", str(bundle_path), "--backend", "onnx", stdin=text).stdout == expected
    )
    translator = Translator.from_bundle(bundle, backend="onnx")
    assert not translator.attends
    with pytest.raises(NoAttention, match="exported without attention; run nmt export"):
        translator.translate(["A man."], alignments=True)
    result = run_nmt(
        "translate", "--model", str(bundle_path), "--backend", "onnx", "--alignments", stdin=text, check=False
    )
    assert_one_line_error(result, "--alignments", "exported without attention")
    # the service exports it again, as it does an export of another bundle version
    assert _translator(bundle, Settings(models_dir=bundle_path, backend="onnx")).attends
    assert OnnxModel.from_bundle(bundle).attends


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_workers_decode_batches_at_once_with_the_same_results(backend, exported, sentences):
    """Two workers (batches decoded on two threads, one session shared) give the n-best lists of
    one, in input order, empty lines included."""
    bundle = load_bundle(exported["transformer"])
    texts = [*sentences, "", *sentences[::-1]]
    search = bundle.search.with_overrides(n_best=2)
    expected = Translator.from_bundle(bundle, backend=backend, batch_size=3).translate(texts, search)
    parallel = Translator.from_bundle(bundle, backend=backend, batch_size=3, workers=2)
    got = parallel.translate(texts, search)
    assert [[(t.text, t.score) for t in nbest] for nbest in got] == [
        [(t.text, t.score) for t in nbest] for nbest in expected
    ]
    with pytest.raises(ValueError, match="workers"):
        Translator.from_bundle(bundle, backend=backend, workers=0)
