"""CTranslate2 backend: a Transformer export (BUNDLE/ct2/, see `nmt.export.ctranslate2`) run by
CTranslate2's own engine and its own beam search.

Unlike the other backends it does not offer the `encode` / `decode_step` seam: CTranslate2 runs
the whole search in C++. `CTranslate2Model.beam_search` takes the same batch as
`nmt.search.beam_search` and returns the same n-best lists, so `Translator` uses either. The two
searches differ, so outputs may differ even on identical weights:
- length normalisation: CTranslate2 ranks by log p / length ** alpha, ours by the GNMT
  ((5 + |y|) / 6) ** alpha (the scores it gives back are ours, of its hypotheses);
- stopping: CTranslate2 ends a sentence once beam_size hypotheses have finished (patience 1),
  ours once its n best can no longer change;
- the length limit is one per batch (the longest of a * source + b), not one per sentence.
Greedy search (beam 1) is the same search in both, and gives the same tokens.

With a shortlist (`nmt.shortlist`), the export's vmap.txt (written from it, see
`nmt.export.ctranslate2`) is CTranslate2's vocabulary map, applied with `use_vmap`: each batch
decodes over the target tokens its source pieces map to, the frequent ones, and the specials.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nmt.bundle import Bundle, bundle_folder
from nmt.config import SearchConfig
from nmt.ct2_format import EXPORT_DIR, EXPORT_FILE
from nmt.errors import BundleError
from nmt.search import BANNED_IDS, Hypothesis, length_penalty, max_lengths
from nmt.shortlist import Shortlist
from nmt.specials import EOS_ID, PAD_ID


def _export_command(bundle: Path) -> str:
    return f"nmt export --model {bundle} --format ctranslate2"


class CTranslate2Model:
    """A `ctranslate2.Translator` on an export folder, searching batches of token ids.

    compute_type: CTranslate2's ("default": as stored; "float32", "int8", ...); threads: intra-op
    threads (default: PyTorch's thread count, as the other backends); replicas: batches it
    decodes at once (CTranslate2's inter_threads: one worker serves one call at a time, so a
    service decoding in several threads at once needs as many).

    It gives no attention (`attends`): the export selects one head for CTranslate2's
    return_attention, not the alignment layer's heads averaged that the other backends give (see
    docs/service.md); a translator from `nmt.engines.open_translator` hands requests for
    alignments to ONNX Runtime."""

    attends = False

    def __init__(
        self,
        folder: str | Path,
        device: str | torch.device = "cpu",
        compute_type: str = "default",
        threads: int | None = None,
        replicas: int = 1,
        use_vmap: bool = False,
    ) -> None:
        import ctranslate2

        self.folder = Path(folder)
        self.use_vmap = use_vmap  # decode with the folder's vmap.txt (a shortlist)
        device = torch.device(device)
        try:
            self.translator = ctranslate2.Translator(
                str(self.folder),
                device=device.type,
                device_index=device.index or 0,
                compute_type=compute_type,
                intra_threads=threads or torch.get_num_threads(),
                inter_threads=replicas,
            )
            vocabulary = self.folder / "shared_vocabulary.json"
            if not vocabulary.is_file():
                vocabulary = self.folder / "target_vocabulary.json"
            self.pieces: list[str] = json.loads(vocabulary.read_text(encoding="utf-8"))
        except (RuntimeError, ValueError, OSError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise BundleError(f"{self.folder}: CTranslate2 cannot load it ({first_line})") from None
        self.ids = {piece: i for i, piece in enumerate(self.pieces)}

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        device: str | torch.device = "cpu",
        shortlist: Shortlist | None = None,
        **kwargs: Any,
    ) -> CTranslate2Model:
        """The export in BUNDLE/ct2/, refused unless it was made from this very bundle version;
        with the bundle's `shortlist`, decoding with the export's vmap.txt of it (refused unless
        it was written from that very shortlist)."""
        folder = bundle_folder(bundle.path, EXPORT_DIR, "ct2 export")
        meta_file = folder / EXPORT_FILE
        if not meta_file.is_file():
            raise BundleError(
                f"{bundle.path}: no CTranslate2 export; run {_export_command(bundle.path)} first"
            )
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            version = meta["version"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            raise BundleError(
                f"{meta_file}: unreadable export description; run {_export_command(bundle.path)} again"
            ) from None
        if version != bundle.version:
            raise BundleError(
                f"{folder}: exported from bundle version {version}, but the bundle is version "
                f"{bundle.version}; run {_export_command(bundle.path)} again"
            )
        if shortlist is not None:
            if shortlist.tables > 1:  # a vmap is one table for every target language
                raise BundleError(
                    f"{bundle.path}: its shortlist has a table per target language "
                    f"({', '.join(shortlist.languages)}), which CTranslate2's vmap cannot hold; decode "
                    "it with the onnx or torch backend, or without the shortlist"
                )
            if not (folder / "vmap.txt").is_file() or meta.get("shortlist") != shortlist.digest:
                raise BundleError(
                    f"{folder}: its vmap.txt is missing or was not written from the bundle's shortlist "
                    f"{shortlist.digest}; run {_export_command(bundle.path)} again"
                )
            kwargs["use_vmap"] = True
        return cls(folder, device, **kwargs)

    def beam_search(
        self, src: Tensor, src_lengths: Tensor, options: SearchConfig, max_len_cap: int | None = None
    ) -> list[list[Hypothesis]]:
        """src (B, S) with lengths (B,) (EOS included) -> an n-best list for each sentence."""
        source = [
            [self.pieces[i] for i in row[:length]]
            for row, length in zip(src.tolist(), src_lengths.tolist(), strict=True)
        ]
        # our limit counts the EOS, CTranslate2's does not
        limit = int(max_lengths(src_lengths, options, max_len_cap).max()) - 1
        results = self.translator.translate_batch(
            source,
            beam_size=options.beam_size,
            num_hypotheses=options.n_best,
            length_penalty=options.length_penalty,
            no_repeat_ngram_size=options.no_repeat_ngram,
            max_decoding_length=limit,
            max_input_length=0,
            suppress_sequences=[[self.pieces[i]] for i in BANNED_IDS],  # never produced, as in ours
            return_scores=True,
            use_vmap=self.use_vmap,
        )
        nbest = []
        for result in results:
            hypotheses = []
            for pieces, score in zip(result.hypotheses, result.scores, strict=True):
                tokens = [self.ids[piece] for piece in pieces]
                tokens = [t for t in tokens if t not in (PAD_ID, EOS_ID)]
                # CTranslate2 returns log p / length ** alpha; the length counts the EOS. The score
                # given back is ours (GNMT's penalty), as the other backends give it: confidence
                # calibrations and cached scores mean the same whichever engine decoded
                log_prob = score * (len(tokens) + 1) ** options.length_penalty
                if not math.isfinite(log_prob):
                    hypotheses.append(Hypothesis(tokens, score, score))
                    continue
                ours = log_prob / float(length_penalty(torch.tensor(len(tokens) + 1), options.length_penalty))
                hypotheses.append(Hypothesis(tokens, ours, log_prob))
            nbest.append(hypotheses)
        return nbest
