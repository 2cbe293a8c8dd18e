"""The ONNX export's format on disk: what `nmt.export.onnx` writes and `nmt.backends.onnx` reads.

Both import their names from here, so neither depends on the other for them. An export is a
folder, BUNDLE/onnx/:

    encoder.onnx   src (B, S) int64, src_lengths (B,) int64 -> "memory.KEY"..., "state.KEY"...
    decoder.onnx   prev_tokens (R,) int64, beam_indices (R,) int64, k () int64,
                   want_log_probs () bool, [vocabulary (V',) int64, outside (M,) int64,
                   outside_log_weight () float32,] [want_attention () bool,]
                   "memory.KEY"... (R rows,
                   or with memory_per_sentence one row per sentence, shared by its R / B
                   consecutive rows), "state.KEY"... (the previous step's rows)
                   -> log_probs (R, V) float32 (only when want_log_probs, else (0, V)),
                      top_log_probs (R, k), top_tokens (R, k), eos_log_probs (R,),
                      "new_state.KEY"... (R rows)[, attention (R, S) float32 (only when
                      want_attention, else (0, 0))]
    export.json    format, the bundle's version, each graph's input and output names in order,
                   opset, quantization, memory_per_sentence, the export-time check

KEY are the model's own memory and state keys (see `nmt.models`). want_attention and attention
are there for models with attention (`decode_step_with_attention`), in exports made since
alignments exist: an export without them still translates, and says it has no attention.
vocabulary: the target ids a shortlist allows (`nmt.shortlist`; empty: all of them); the
tokens returned are ids still, and log_probs are -inf outside it. outside, outside_log_weight:
ids outside it whose logits, each counted exp(outside_log_weight) times, join the normaliser
(`nmt.search.outside_sample`; [PAD] and -inf add nothing). Exports made before shortlists lack
them: they translate, without a shortlist. Graph
inputs a model does not use (the no-attention RNN never reads "memory.src_mask") are dropped by
the exporter, so only the inputs a session declares are fed.
"""

EXPORT_DIR = "onnx"  # inside the bundle folder
ENCODER_FILE, DECODER_FILE, EXPORT_FILE = "encoder.onnx", "decoder.onnx", "export.json"
EXPORT_FORMAT = 6  # 2: the decoder graph reorders the state and ranks the top k; 3: its output head;
# 4: a decoder taking the memory once per sentence computes any rows of its grid (GRID_ROWS);
# 5: a shortlist's normaliser counts sampled ids outside it (OUTSIDE); 6: the recurrent steps'
# first input product from a per-token table, the attention RNNs' memory once per sentence and
# their GRID_ROWS, the plain LSTM's memory.context_gates (older exports are remade where served)

ENCODER_INPUTS = ("src", "src_lengths")
PREV_TOKENS, BEAM_INDICES, K = "prev_tokens", "beam_indices", "k"  # the decoder's first inputs
WANT_LOG_PROBS = "want_log_probs"  # the decoder graph's switch for its (R, V) output
MEMORY, STATE, NEW_STATE = "memory.", "state.", "new_state."  # graph name prefixes of the seam's dicts
LOG_PROBS = "log_probs"
WANT_ATTENTION, ATTENTION = "want_attention", "attention"  # the optional attention output and its switch
VOCABULARY = "vocabulary"  # the decoder's shortlist input (V',) int64; empty = the full vocabulary
# with it: ids outside the vocabulary (M,) int64 and the log of the share each stands for () float
OUTSIDE, OUTSIDE_LOG_WEIGHT = "outside", "outside_log_weight"
# a decoder taking the memory once per sentence computes only some rows of its B * G grid:
# grid_rows (B * G,) the row in each place (R' where none is), row_slots (R',) each row's place
GRID_ROWS, ROW_SLOTS = "grid_rows", "row_slots"
TOP_K_OUTPUTS = ("top_log_probs", "top_tokens", "eos_log_probs")
