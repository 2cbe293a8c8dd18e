"""Training throughput: the real training loop against a bare forward/backward/step loop.

Target: the real loop (`nmt.train.Trainer.train_epoch`, which collates each batch, calls
`train_step`, steps the schedule, keeps the progress bar, the metrics log and the signal check)
reaches at least 90% of the target tokens/s of a bare loop that only does
``model(src, src_lengths, tgt_in)`` -> `label_smoothed_loss` -> backward -> clip -> optimizer.step.

Both contenders train their own copy of the same freshly initialised model (the bare one is a
deep copy taken before any step) with the same recipe, in this process, on the same threads, over
the same batches: each round, the next `--steps` optimizer steps of the Trainer's epoch. The real
loop collates inside its timed region, as it does when training; the bare loop gets its batches
pre-collated (collation is timed separately and shown as `collate ms/step`), so the gap between
them is everything the real loop does besides the arithmetic. The bare loop adds nothing: no
schedule, no logging, no loss read-back. Validation and checkpoints are left out
(`train.save_every_steps=0`, and the Trainer is driven through `train_epoch`, never `fit`).

The Trainer runs from a temporary `train.out_dir`; it trains its SentencePiece model there unless
`--spm` gives one (joint tokenizers only). Rounds alternate which contender goes first.

    .venv/bin/python benchmarks/train_speed.py            # ~2 min
    .venv/bin/python benchmarks/train_speed.py --quick    # ~30 s
    .venv/bin/python benchmarks/train_speed.py --set model.d_model=256 --set model.ff_dim=1024
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
import tempfile
import time
from pathlib import Path

import harness
import torch

from nmt.data import Batch
from nmt.optim import build_optimizer, label_smoothed_loss
from nmt.train import StopSignal, Trainer, _autocast

TARGET = 0.90


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def next_groups(trainer: Trainer, steps: int) -> list[list[list[int]]]:
    """The batches (as pair indices) of the Trainer's next `steps` optimizer steps.

    Starts a new epoch first when the current one has too few batches left, so a round never
    crosses an epoch end (where `fit` would validate).
    """
    cfg, progress = trainer.cfg, trainer.progress
    needed = steps * cfg.accum_steps
    batches = trainer.data.train.batches(cfg.batch_tokens, cfg.seed, progress.epoch)
    if len(batches) - progress.batch < needed:
        if len(batches) < needed:
            sys.exit(f"an epoch has only {len(batches)} batches; ask for fewer --steps")
        progress.epoch, progress.batch = progress.epoch + 1, 0
        batches = trainer.data.train.batches(cfg.batch_tokens, cfg.seed, progress.epoch)
    upcoming = batches[progress.batch : progress.batch + needed]
    return [upcoming[i : i + cfg.accum_steps] for i in range(0, needed, cfg.accum_steps)]


def target_tokens(trainer: Trainer, groups: list[list[list[int]]]) -> int:
    """Non-pad target tokens (EOS included), what the Trainer's tokens/s counts."""
    lens = trainer.data.train.tgt_lens
    return sum(int(lens[indices].sum()) + len(indices) for group in groups for indices in group)


def run_real(trainer: Trainer, steps: int, stop: StopSignal) -> float:
    """Seconds for the Trainer's own loop to take `steps` optimizer steps."""
    # The recipe is frozen; a copy of its train section with a nearer max_steps is how the
    # loop is told to return after this round (it checks its budget after every step).
    trainer.cfg = trainer.cfg.model_copy(update={"max_steps": trainer.progress.step + steps})
    sync(trainer.ctx.device)
    start = time.perf_counter()
    ended = trainer.train_epoch(stop)
    sync(trainer.ctx.device)
    seconds = time.perf_counter() - start
    assert ended == "budget", f"the real loop stopped early ({ended})"
    return seconds


def run_bare(model, optimizer, groups: list[list[Batch]], trainer: Trainer) -> float:
    """Seconds for the bare loop to take one optimizer step per group of pre-collated batches."""
    smoothing, clip = trainer.cfg.label_smoothing, trainer.cfg.clip_norm
    device = trainer.ctx.device
    sync(device)
    start = time.perf_counter()
    for group in groups:
        optimizer.zero_grad(set_to_none=True)
        for batch in group:
            with _autocast(trainer.recipe, device):  # a no-op on CPU; the same autocast on CUDA
                logits = model(batch.src, batch.src_lengths, batch.tgt_in)
            loss = label_smoothed_loss(logits, batch.tgt_out, smoothing)
            (loss / (batch.ntokens * len(group))).backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_common_arguments(parser)
    parser.add_argument("--spm", type=Path, help="a joint SentencePiece model to reuse (default: train one)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=15, help="optimizer steps per round and contender")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per contender first")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 3 steps, 1 warm-up step")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.steps, args.warmup = 3, 3, 1
    harness.set_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        out_dir = Path(tmp) / "run"
        settings = [f"train.out_dir={out_dir}", "train.save_every_steps=0", "train.max_steps=0"]
        recipe = harness.load_benchmark_recipe(args, settings)
        if args.spm:
            if not recipe.tokenizer.joint:
                sys.exit("--spm needs a recipe with tokenizer.joint: true")
            out_dir.mkdir(parents=True)
            shutil.copyfile(args.spm, out_dir / "spm.model")

        setup_start = time.perf_counter()
        trainer = Trainer(recipe, resume=False)
        trainer.core.train()
        bare_model = copy.deepcopy(trainer.core)  # same weights, before either has stepped
        bare_optimizer = build_optimizer(bare_model, trainer.cfg)
        device = trainer.ctx.device
        params = sum(p.numel() for p in trainer.core.parameters())
        print(
            f"{recipe.name}: {len(trainer.data.train):,} pairs, vocab {trainer.data.tgt_tokenizer.vocab_size}, "
            f"{params / 1e6:.2f}M parameters, batch_tokens {trainer.cfg.batch_tokens}, "
            f"accum {trainer.cfg.accum_steps}, device {device}, {torch.get_num_threads()} threads, "
            f"set-up {time.perf_counter() - setup_start:.1f} s"
        )

        def collate(groups: list[list[list[int]]]) -> tuple[list[list[Batch]], float]:
            start = time.perf_counter()
            batches = [[trainer.data.train.collate(b).to(device) for b in group] for group in groups]
            return batches, time.perf_counter() - start

        rows, real_rates, bare_rates = [], [], []
        with StopSignal() as stop:
            # warm-up: the real loop takes its first steps, the bare loop the same batches
            groups = next_groups(trainer, args.warmup)
            run_bare(bare_model, bare_optimizer, collate(groups)[0], trainer)
            run_real(trainer, args.warmup, stop)
            for round_ in range(args.rounds):
                groups = next_groups(trainer, args.steps)
                tokens = target_tokens(trainer, groups)
                bare_batches, collate_seconds = collate(groups)
                order = ["real", "bare"] if round_ % 2 == 0 else ["bare", "real"]
                seconds = {}
                for name in order:
                    if name == "real":
                        seconds[name] = run_real(trainer, args.steps, stop)
                    else:
                        seconds[name] = run_bare(bare_model, bare_optimizer, bare_batches, trainer)
                real_rates.append(tokens / seconds["real"])
                bare_rates.append(tokens / seconds["bare"])
                rows.append(
                    [
                        round_ + 1,
                        "-".join(order),
                        f"{tokens:,}",
                        f"{real_rates[-1]:,.0f}",
                        f"{bare_rates[-1]:,.0f}",
                        f"{real_rates[-1] / bare_rates[-1]:.3f}",
                        f"{1000 * collate_seconds / args.steps:.1f}",
                    ]
                )

    real, bare = harness.median(real_rates), harness.median(bare_rates)
    rows.append(["median", "", "", f"{real:,.0f}", f"{bare:,.0f}", f"{real / bare:.3f}", ""])
    headers = ["round", "order", "tgt tokens", "real tok/s", "bare tok/s", "real/bare", "collate ms/step"]
    harness.print_table(headers, rows)
    print(f"ratio real/bare (median tok/s): {real / bare:.3f}")
    harness.verdict(
        f"real loop >= {TARGET:.0%} of bare loop tokens/s ({real / bare:.1%})", real / bare >= TARGET
    )


if __name__ == "__main__":
    main()
