"""The training loop: `train(recipe, resume)` reads a recipe and leaves a bundle behind.

One epoch is a deterministic list of length-bucketed batches (a function of the seed and the
epoch number), so a checkpoint only needs (epoch, batch) to say where the data stands, and
`--resume` continues exactly: same batches, same RNG, same optimizer and schedule.

Each optimizer step takes `accum_steps` batches. Each epoch ends with validation (loss, and
BLEU/chrF of beam-search translations), a checkpoint, and early stopping on BLEU. Mid-epoch
checkpoints every `save_every_steps` steps bound what a kill can lose; SIGINT and SIGTERM
save a checkpoint before the process exits. Under torchrun every process trains on its shard
of each epoch's batches (DDP) and rank 0 alone validates and writes files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from nmt import distributed
from nmt.bundle import load_bundle
from nmt.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    remove_partial_writes,
    save_checkpoint,
)
from nmt.config import Recipe
from nmt.data import Batch, shard
from nmt.dataset import PreparedData, ValidSet, ensure_prepared, open_prepared
from nmt.distill import check_targets
from nmt.errors import NmtError
from nmt.metrics import bleu_only
from nmt.models import Seq2SeqModel, build_model
from nmt.optim import build_optimizer, build_scheduler, label_smoothed_loss
from nmt.run import RunDir
from nmt.runlog import plot_metrics
from nmt.tokenizer import file_sha256
from nmt.translator import Translator

log = logging.getLogger("nmt.train")


class Interrupted(NmtError):
    """Training stopped by a signal after saving a checkpoint."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint."""

    epoch: int = 0  # current epoch (0-based)
    batch: int = 0  # next batch of this epoch, in this process's shard
    step: int = 0  # optimizer steps taken
    best_bleu: float = -1.0
    bad_epochs: int = 0  # epochs since the best BLEU
    seconds: float = 0.0  # training wall time so far


def _quiet_closed_output() -> None:
    """Send stdout, stderr and the log to /dev/null, so that a save after the reader of our output
    has gone (a closed pipe) cannot fail on a write."""
    devnull = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - open until the process exits
    sys.stdout = sys.stderr = devnull
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(devnull)


class StopSignal:
    """Turns SIGINT / SIGTERM into a flag the loop checks between steps."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self) -> StopSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.received is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.received = signum
        log.warning("signal %d: saving a checkpoint, then stopping", signum)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def prepare_data(recipe: Recipe, run: RunDir, ctx: distributed.Context) -> PreparedData:
    """The run's prepared dataset, memory-mapped. Rank 0 prepares it first when it is missing or
    stale (the log says why) while the others wait; a run with a tokenizer of its own (resumed)
    keeps it. The run gets a copy of the tokenizer, which its bundle and `--resume` use."""
    folder = run.prepared(recipe)
    own = run.tokenizer_files(recipe)
    if ctx.is_main:
        have = all(path.is_file() for path in own)
        given = run.given_tokenizers(recipe)
        if recipe.tokenizer.model is not None and not recipe.tokenizer.model.is_file():
            raise NmtError(f"tokenizer.model: {recipe.tokenizer.model} is not a file")
        ensure_prepared(recipe, folder, given, explicit=recipe.data.prepared is not None)
        if not have:
            for path in own:
                shutil.copyfile(folder / path.name, path)
    distributed.barrier(ctx)
    data = open_prepared(recipe, folder)
    if ctx.is_main:
        sizes = data.train.epoch_sizes()
        for corpus, size in zip(data.train.corpora, sizes, strict=True):
            log.info("train %s: %d pairs kept, %d drawn per epoch", corpus.name, len(corpus.kept), size)
    return data


def initial_weights(recipe: Recipe) -> dict[str, torch.Tensor]:
    """`train.init_from`'s weights for a new run, checked before any data is prepared: NmtError in
    one line unless the recipe uses the bundle's tokenizer (`tokenizer.model`) and its model has
    the same shapes."""
    path = recipe.train.init_from
    assert path is not None
    bundle = load_bundle(path)
    given, theirs = recipe.tokenizer.model, bundle.tgt_tokenizer.path
    if given is None or not given.is_file() or file_sha256(given) != file_sha256(theirs):
        raise NmtError(f"train.init_from: the run must use {path}'s tokenizer; set tokenizer.model: {theirs}")
    weights = bundle.load_model().state_dict()
    try:
        build_model(
            recipe.model, bundle.src_tokenizer.vocab_size, bundle.tgt_tokenizer.vocab_size
        ).load_state_dict(weights)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[-1].strip()
        raise NmtError(f"train.init_from: {path} does not fit the recipe's model ({first})") from None
    log.info("weights initialised from %s (%s)", bundle.name, bundle.version)
    return weights


def _autocast(recipe: Recipe, device: torch.device):
    if device.type != "cuda" or recipe.train.amp == "none":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if recipe.train.amp == "bf16" else torch.float16)


def train_step(
    model, batches: list[Batch], optimizer, scaler, recipe: Recipe, ctx
) -> tuple[torch.Tensor, int]:
    """One optimizer step over `batches` (gradient accumulation). Returns (summed loss, target tokens)."""
    optimizer.zero_grad(set_to_none=True)
    total_loss = torch.zeros((), device=ctx.device)
    total_tokens = 0
    for i, batch in enumerate(batches):
        last = i == len(batches) - 1
        sync = contextlib.nullcontext() if last or not ctx.distributed else model.no_sync()
        with sync:
            with _autocast(recipe, ctx.device):
                logits = model(batch.src, batch.src_lengths, batch.tgt_in)
            loss = label_smoothed_loss(logits, batch.tgt_out, recipe.train.label_smoothing)
            scaler.scale(loss / (batch.ntokens * len(batches))).backward()
        total_loss += loss.detach()
        total_tokens += batch.ntokens
    if recipe.train.clip_norm > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.train.clip_norm)
    scaler.step(optimizer)
    scaler.update()
    return total_loss, total_tokens


@torch.no_grad()
def validate_set(
    model: Seq2SeqModel, valid: ValidSet, data: PreparedData, recipe: Recipe, device: torch.device
) -> dict:
    """One validation set: loss (NLL per target token) and BLEU/chrF of beam-search translations
    of its prepared sources (which carry the language token of a multilingual model)."""
    nll, tokens = 0.0, 0
    for indices in valid.pairs.batches(recipe.train.batch_tokens, seed=0, epoch=0):
        batch = valid.pairs.collate(indices).to(device)
        logits = model(batch.src, batch.src_lengths, batch.tgt_in)
        nll += label_smoothed_loss(logits, batch.tgt_out, 0.0).item()
        tokens += batch.ntokens
    limit = recipe.train.eval_max_sentences or len(valid.src_ids)
    translator = Translator(
        model,
        data.src_tokenizer,
        data.tgt_tokenizer,
        recipe.search,
        device,
        batch_size=recipe.train.eval_batch_size,
        max_len_cap=recipe.model.position_limit,
    )
    hypotheses = [nbest[0].text for nbest in translator.translate_ids(valid.src_ids[:limit])]
    bleu, chrf, signature = bleu_only(hypotheses, valid.references[:limit])
    return {"loss": nll / max(tokens, 1), "bleu": bleu, "chrf": chrf, "signature": signature}


def validate(model: Seq2SeqModel, data: PreparedData, recipe: Recipe, device: torch.device) -> dict:
    """Scores of every validation set. One set: its loss, bleu, chrf and signature. Several: their
    means under those keys (model selection and early stopping use the mean BLEU) and each set's
    own scores under "sets" ({name: scores})."""
    model.eval()
    scores = {valid.name: validate_set(model, valid, data, recipe, device) for valid in data.valid}
    model.train()
    if len(scores) == 1:
        return next(iter(scores.values()))
    mean = {key: sum(s[key] for s in scores.values()) / len(scores) for key in ("loss", "bleu", "chrf")}
    return {**mean, "signature": next(iter(scores.values()))["signature"], "sets": scores}


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Holds the pieces of one run so that the loop below reads as the algorithm it is."""

    def __init__(self, recipe: Recipe, resume: bool):
        self.recipe = recipe
        self.cfg = recipe.train
        self.ctx = distributed.setup(self.cfg.device)
        self.run = RunDir(self.cfg.out_dir)
        found = latest_checkpoint(self.run.checkpoints) if self.run.checkpoints.is_dir() else None
        if found and not resume:
            raise NmtError(
                f"{self.run.path} already holds a run; pass --resume to continue it or set another train.out_dir"
            )
        if found:
            self.run.check_resumable(recipe)
        if self.ctx.is_main:
            self.run.save_recipe(recipe)
        torch.manual_seed(self.cfg.seed)
        self.distilled = check_targets(recipe) if recipe.distill else None
        initial = initial_weights(recipe) if self.cfg.init_from is not None and not found else None
        self.data = prepare_data(recipe, self.run, self.ctx)
        self.core = build_model(
            recipe.model, self.data.src_tokenizer.vocab_size, self.data.tgt_tokenizer.vocab_size
        )
        if initial is not None:
            self.core.load_state_dict(initial)
        self.core.to(self.ctx.device)
        self.model = DistributedDataParallel(self.core) if self.ctx.distributed else self.core
        self.optimizer = build_optimizer(self.core, self.cfg)
        self.scheduler = build_scheduler(self.optimizer, self.cfg)
        fp16 = self.cfg.amp == "fp16" and self.ctx.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16)
        self.progress = Progress()
        if found:
            self._restore(found)

    def _restore(self, path: Path) -> None:
        if self.ctx.is_main:
            remove_partial_writes(self.run.checkpoints)
        state = load_checkpoint(path)
        self.core.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        self.progress = Progress(**state["progress"])
        if self.ctx.is_main:
            self.run.log.truncate_after(self.progress.step)
            log.info(
                "resumed from %s (epoch %d, step %d)", path.name, self.progress.epoch + 1, self.progress.step
            )

    def save(self, best: bool = False) -> None:
        """Write step-N.pt (and best.pt) atomically on rank 0; keep the last `keep_last`."""
        if not self.ctx.is_main:
            return
        payload = {
            "model": self.core.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": _rng_state(),
            "progress": asdict(self.progress),
            "recipe": self.recipe.model_dump(mode="json"),
        }
        save_checkpoint(self.run.checkpoint(self.progress.step), payload)
        if best:
            save_checkpoint(self.run.best, payload)
        prune_checkpoints(self.run.checkpoints, self.cfg.keep_last)

    def validate_and_save(self, end_of_epoch: bool) -> bool:
        """Validate on rank 0, keep the best, save; returns True when early stopping says stop."""
        stop = False
        if self.ctx.is_main:
            started = time.perf_counter()
            scores = validate(self.core, self.data, self.recipe, self.ctx.device)
            scores["seconds"] = round(time.perf_counter() - started, 1)
            scores["train_seconds"] = round(self.progress.seconds, 1)
            improved = scores["bleu"] > self.progress.best_bleu
            if improved:
                self.progress.best_bleu, self.progress.bad_epochs = scores["bleu"], 0
            elif end_of_epoch:
                self.progress.bad_epochs += 1
            if end_of_epoch and self.cfg.schedule == "plateau":
                self.scheduler.step(scores["bleu"])
            self.run.log.write(kind="valid", epoch=self.progress.epoch + 1, step=self.progress.step, **scores)
            log.info(
                "epoch %d step %d: valid loss %.3f, BLEU %.2f, chrF %.2f%s%s",
                self.progress.epoch + 1,
                self.progress.step,
                scores["loss"],
                scores["bleu"],
                scores["chrf"],
                " (means)" if "sets" in scores else "",
                " (best)" if improved else "",
            )
            for name, own in scores.get("sets", {}).items():
                log.info("  %s: loss %.3f, BLEU %.2f, chrF %.2f", name, own["loss"], own["bleu"], own["chrf"])
            stop = self.progress.bad_epochs >= self.cfg.patience
            if end_of_epoch:
                self.progress.epoch, self.progress.batch = self.progress.epoch + 1, 0
            self.save(best=improved)
            plot_metrics(self.run.log.read(), self.run.plot, self.recipe.name)
        elif end_of_epoch:
            self.progress.epoch, self.progress.batch = self.progress.epoch + 1, 0
        if end_of_epoch and self.cfg.schedule == "plateau" and self.ctx.distributed:
            torch.distributed.broadcast_object_list(lr := [self.optimizer.param_groups[0]["lr"]], src=0)
            for group in self.optimizer.param_groups:
                group["lr"] = lr[0]
        return distributed.any_rank(self.ctx, stop)

    def train_epoch(self, stop: StopSignal) -> str | None:
        """Train on the rest of the current epoch. Returns why it ended early, if it did."""
        cfg, progress = self.cfg, self.progress
        batches = shard(
            self.data.train.batches(cfg.batch_tokens, cfg.seed, progress.epoch),
            self.ctx.rank,
            self.ctx.world_size,
        )
        bar = tqdm(
            total=len(batches),
            initial=progress.batch,
            desc=f"epoch {progress.epoch + 1}",
            disable=not self.ctx.is_main,
            mininterval=1.0,
            dynamic_ncols=True,
            leave=False,
        )
        window_loss, window_tokens, window_start = (
            torch.zeros((), device=self.ctx.device),
            0,
            time.perf_counter(),
        )
        while progress.batch < len(batches):
            group = batches[progress.batch : progress.batch + cfg.accum_steps]
            step_start = time.perf_counter()
            loss, tokens = train_step(
                self.model,
                [self.data.train.collate(b).to(self.ctx.device) for b in group],
                self.optimizer,
                self.scaler,
                self.recipe,
                self.ctx,
            )
            if cfg.schedule == "inverse_sqrt":
                self.scheduler.step()
            progress.batch += len(group)
            progress.step += 1
            progress.seconds += time.perf_counter() - step_start
            window_loss, window_tokens = window_loss + loss, window_tokens + tokens
            bar.update(len(group))
            if progress.step % cfg.log_every_steps == 0 and self.ctx.is_main:
                elapsed = time.perf_counter() - window_start
                record = {
                    "loss": window_loss.item() / max(window_tokens, 1),
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "tokens_per_s": window_tokens * self.ctx.world_size / elapsed,
                }
                bar.set_postfix(
                    loss=f"{record['loss']:.3f}",
                    lr=f"{record['lr']:.2e}",
                    tok_s=f"{record['tokens_per_s']:.0f}",
                )
                self.run.log.write(kind="train", epoch=progress.epoch + 1, step=progress.step, **record)
                window_loss, window_tokens, window_start = (
                    torch.zeros((), device=self.ctx.device),
                    0,
                    time.perf_counter(),
                )
            if distributed.any_rank(self.ctx, stop.received is not None):
                self.save()
                bar.close()
                return "signal"
            if self.budget_spent():
                bar.close()
                return "budget"
            if cfg.save_every_steps and progress.step % cfg.save_every_steps == 0:
                self.save()
        bar.close()
        return None

    def budget_spent(self) -> bool:
        """Whether `max_steps` or `max_seconds` (of training steps) is used up."""
        cfg, progress = self.cfg, self.progress
        return bool(cfg.max_steps and progress.step >= cfg.max_steps) or bool(
            cfg.max_seconds and progress.seconds >= cfg.max_seconds
        )

    def fit(self) -> Path:
        with StopSignal() as stop:
            try:
                self._loop(stop)
            except BrokenPipeError:  # whoever read our output is gone (`nmt train | tee log`, then Ctrl-C)
                _quiet_closed_output()
                self.save()
                raise Interrupted(
                    f"output closed at step {self.progress.step}; checkpoint saved in {self.run.checkpoints}, "
                    "continue with --resume",
                    stop.received or signal.SIGPIPE,
                ) from None
        return self.finish()

    def _loop(self, stop: StopSignal) -> None:
        """Epochs until the budget, the epoch limit or early stopping; a signal saves and raises."""
        cfg, progress = self.cfg, self.progress
        self.core.train()
        while progress.epoch < cfg.max_epochs and not self.budget_spent():
            ended = self.train_epoch(stop)
            if ended == "signal":
                raise Interrupted(
                    f"interrupted at step {progress.step}; checkpoint saved in {self.run.checkpoints}, "
                    "continue with --resume",
                    stop.received or signal.SIGINT,
                )
            if ended == "budget":
                log.info("training budget (max_steps / max_seconds) spent at step %d", progress.step)
                self.validate_and_save(end_of_epoch=False)
                return
            if self.validate_and_save(end_of_epoch=True):
                log.info("early stopping: no better BLEU for %d epochs", cfg.patience)
                return

    def _bundle_scores(self, record: dict[str, Any]) -> dict[str, Any]:
        """The best validation record as bundle.json keeps scores: {"valid": record} for one
        direction, {"en-de": {"valid": its set's scores}, ...} for a multilingual model."""
        if not self.recipe.data.multilingual:
            return {"valid": record}
        scores: dict[str, Any] = {}
        for valid in self.data.valid:
            direction = "-".join(valid.direction)
            label = "valid" if valid.name == direction else valid.name
            scores.setdefault(direction, {})[label] = record.get("sets", {}).get(valid.name, record)
        return scores

    def finish(self) -> Path:
        """Write the bundle from the best checkpoint (rank 0)."""
        distributed.barrier(self.ctx)
        if not self.ctx.is_main:
            return self.run.bundle
        source = self.run.best if self.run.best.is_file() else latest_checkpoint(self.run.checkpoints)
        if source is None:
            raise NmtError(f"{self.run.checkpoints}: no checkpoint to make a bundle from")
        state = load_checkpoint(source)
        best = [
            r
            for r in self.run.log.read()
            if r.get("kind") == "valid" and r["step"] == state["progress"]["step"]
        ]
        meta = {
            "training": {
                "recipe": self.recipe.name,
                "train": self.recipe.data.model_dump(mode="json")["train"],
                "pairs": len(self.data.train),
                "steps": state["progress"]["step"],
                "epochs": state["progress"]["epoch"],
                "seconds": round(self.progress.seconds, 1),
                "device": str(self.ctx.device),
                "processes": self.ctx.world_size,
                "checkpoint": source.name,
            },
            "scores": self._bundle_scores(best[-1] if best else {}),
        }
        if self.cfg.init_from is not None:
            meta["training"]["init_from"] = str(self.cfg.init_from)
        if self.distilled is not None:
            meta["distilled"] = self.distilled
        path = self.run.write_bundle(state["model"], self.recipe, meta)
        log.info("bundle written to %s", path)
        return path


def train(recipe: Recipe, resume: bool = False) -> Path:
    """Train a model from a recipe; returns the path of the bundle it writes."""
    try:
        return Trainer(recipe, resume).fit()
    finally:
        distributed.teardown()
