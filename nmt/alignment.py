"""Word alignments from attention: which source word each target word was translated from.

A model with attention gives, for every target token it produced, its weights over the source
tokens (`Translation.attention`, (T, S)). Here those subword-level weights become links between
words, the unit people (and markup transfer) care about:

- words: SentencePiece marks the first piece of every word with "▁", so a piece starting with
  "▁" starts a new word and any other piece continues the current one (`word_ids` has the
  details). Word i is then the i-th whitespace-separated token of the text the pieces decode to.
- the rule, the "argmax of attention" alignment (Garg et al. 2019, fairseq's
  `extract_hard_alignment`; Luong et al. 2015 align unknown words the same way): a target word's
  row is the mean of its pieces' rows; the mass on a source word is the sum over its pieces; each
  target word is linked to the one source word with the most mass. Every target word gets exactly
  one link; a source word may get several, or none.
- EOS: the source's EOS column and the target's EOS row carry no word. They are dropped before the
  argmax (the mass a target word puts on EOS, common for punctuation, goes to no word).

Links are (source word, target word) pairs, sorted by target word, written in Pharaoh format
"0-0 1-2 ..." by `pharaoh`.

Letters: T target pieces, S source pieces.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

WORD_START = "▁"  # SentencePiece's U+2581, which stands for the space before a word
UNKNOWN = "<unk>"  # the UNK piece of every tokenizer we train

Alignment = list[tuple[int, int]]  # (source word, target word) links


def word_ids(pieces: Sequence[str]) -> list[int]:
    """The word index of every piece: ["▁A", "▁do", "g", "▁runs"] -> [0, 1, 1, 2].

    Words are what the pieces decode to, split at whitespace: a piece that is "▁" alone joins
    the word after it (the last word, at the end), and UNK, which decodes to " ⁇ ", is a word of
    its own. Pieces that decode to no word at all (there is none) get -1."""
    starts: list[bool | None] = []  # per piece: starts a word, continues one, or None: no letters
    boundary = True
    for piece in pieces:
        if piece == UNKNOWN:
            starts.append(True)
            boundary = True  # what follows UNK is a new word
            continue
        boundary = boundary or piece.startswith(WORD_START)
        if not piece.strip(WORD_START):
            starts.append(None)
            continue
        starts.append(boundary)
        boundary = False
    ids, word = [], -1
    for start in starts:
        word += bool(start)
        ids.append(word)
    following = word  # content-less pieces take the word after them (or the last one)
    for i in reversed(range(len(starts))):
        if starts[i] is None:
            ids[i] = following
        else:
            following = ids[i]
    return ids


def word_alignment(src_pieces: Sequence[str], tgt_pieces: Sequence[str], attention: Tensor) -> Alignment:
    """Links (source word, target word) for a translation, by the rule in the module docstring.

    attention: (T, S) weights of each target piece over the source pieces, T = len(tgt_pieces)
    (or one more: the EOS step's row) and S = len(src_pieces) (or one more: the EOS column);
    anything array-like. Rows need not be normalised.
    """
    weights = torch.as_tensor(attention, dtype=torch.float32)
    if weights.dim() != 2:
        raise ValueError(f"attention must be a (T, S) matrix, got {tuple(weights.shape)}")
    rows, columns = weights.shape
    if rows not in (len(tgt_pieces), len(tgt_pieces) + 1) or columns not in (
        len(src_pieces),
        len(src_pieces) + 1,
    ):
        raise ValueError(
            f"attention is {rows} x {columns}, but there are {len(tgt_pieces)} target and "
            f"{len(src_pieces)} source pieces (each + 1 at most, for EOS)"
        )
    if not tgt_pieces or not src_pieces:
        return []
    src_words, tgt_words = word_ids(src_pieces), word_ids(tgt_pieces)
    if src_words[-1] < 0 or tgt_words[-1] < 0:  # no words on one side: nothing to link
        return []
    weights = weights[: len(tgt_pieces), : len(src_pieces)]  # (T, S) without EOS
    mass = torch.zeros(len(tgt_pieces), src_words[-1] + 1).index_add_(
        1, torch.tensor(src_words), weights
    )  # (T, source words): summed over each word's pieces
    by_word = torch.zeros(tgt_words[-1] + 1, mass.size(1)).index_add_(0, torch.tensor(tgt_words), mass)
    # a sum over a target word's pieces ranks its source words as their mean does
    return [(int(src), tgt) for tgt, src in enumerate(by_word.argmax(dim=1).tolist())]


def pharaoh(alignment: Alignment) -> str:
    """Links in Pharaoh format: [(0, 0), (1, 2)] -> "0-0 1-2"."""
    return " ".join(f"{src}-{tgt}" for src, tgt in alignment)


def offset(alignment: Alignment, src_words: int, tgt_words: int) -> Alignment:
    """The links of a sentence placed after `src_words` and `tgt_words` words of earlier sentences."""
    return [(src + src_words, tgt + tgt_words) for src, tgt in alignment]
