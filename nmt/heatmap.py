"""Draw what a translation attended to: a heatmap of its attention, source pieces across, target
pieces down, one cell per (target piece, source piece), darker for more weight (`nmt attention`).

The EOS column and row are drawn too ("</s>"): the weight a step put on the source's EOS is
part of its row, which sums to 1, and the last step, which ended the translation, has a row. The word alignment (`nmt.alignment`) is drawn over it as dots, on the pieces
of each linked pair of words.
"""

from __future__ import annotations

from pathlib import Path

from nmt.alignment import word_ids
from nmt.translator import Attention

EOS_LABEL = "</s>"


def draw_attention(
    attention: Attention, alignment: list[tuple[int, int]], path: Path, title: str = ""
) -> Path:
    """Write the heatmap of `attention` (and `alignment`'s links) as an image file (PNG, SVG or
    PDF, by its suffix); returns the path."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    weights = attention.weights.float().numpy()  # (T + 1, S + 1)
    src_labels = [*attention.src_pieces, EOS_LABEL]
    tgt_labels = [*attention.tgt_pieces, EOS_LABEL]
    rows, columns = weights.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * columns + 2), max(3.0, 0.4 * rows + 1.6)))
    image = ax.imshow(weights, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(columns), src_labels, rotation=60, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(rows), tgt_labels)
    ax.set_xlabel("source")
    ax.set_ylabel("target")
    src_words, tgt_words = word_ids(attention.src_pieces), word_ids(attention.tgt_pieces)
    links = set(alignment)
    dots = [
        (s, t)
        for t, tgt_word in enumerate(tgt_words)
        for s, src_word in enumerate(src_words)
        if (src_word, tgt_word) in links
    ]
    if dots:
        ax.scatter([s for s, _ in dots], [t for _, t in dots], s=12, c="tab:red", label="word alignment")
        ax.legend(loc="upper left", bbox_to_anchor=(1.15, 1.0), fontsize="small", frameon=False)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="attention")
    if title:
        ax.set_title(title, fontsize="medium")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
