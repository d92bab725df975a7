"""Trainer callbacks: exact per-step loss records, bad-sample totals, held-out loss, and `instantiate_callbacks`,
which builds the config's extra callbacks (`callbacks:`, configs/callbacks/, e.g. the win-rate callback) with
`hydra.utils.instantiate`."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from streaming_vlm.data.collator import split_batch
from streaming_vlm.errors import UserError
from streaming_vlm.training.checkpoints import write_json_atomic
from streaming_vlm.training.loss import selective_lm_loss
from streaming_vlm.training.trainer import gather_counts

HELDOUT_FILE = "heldout_loss.json"



def log_metrics(trainer, metrics: dict) -> None:
    """`trainer.log` from inside a callback without swallowing the step's own loss log (Trainer.log clears
    `control.should_log`, which the step's logging decision still needs)."""
    control = getattr(trainer, "control", None)
    keep = getattr(control, "should_log", None)
    trainer.log(dict(metrics))
    if keep is not None:
        trainer.control.should_log = keep

class StepRecorder(TrainerCallback):
    """After every optimizer step (all ranks): the step's exact loss, and bad-sample totals over ranks."""

    def __init__(self, trainer):
        self.trainer = trainer
        self._last = {"__tokens__": 0, "__vision__": 0, "__labels__": 0}

    def on_step_end(self, args, state, control, **kwargs):
        t = self.trainer
        loss = t.pop_step_loss()
        counters = {"__tokens__": t.tokens_local, "__vision__": t.vision_tokens_local,
                    "__labels__": t.label_tokens_local}
        delta = {k: v - self._last[k] for k, v in counters.items()}
        self._last = counters
        totals = gather_counts({**t.bad_samples_local, "__seen__": t.seen_local, **delta})
        t.seen_total = totals.pop("__seen__", 0)
        step_tokens = {k: totals.pop(k, 0) for k in delta}
        t.bad_samples_total = totals
        samples = t.pop_step_samples()
        extra = {"time": time.time(), "tokens": step_tokens["__tokens__"],
                 "vision_tokens": step_tokens["__vision__"], "label_tokens": step_tokens["__labels__"]}
        if torch.cuda.is_available():
            extra["max_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        lr = t.pop_step_lr()
        t.append_loss_record(state.global_step, loss, lr, samples, **extra)
        return control


@torch.no_grad()
def heldout_loss(model, dataset, collator, max_samples: int, device, prepare=None) -> tuple[float, int]:
    """Token-averaged loss over the first `max_samples` samples of `dataset`, sharded over ranks (collective)."""
    dist = torch.distributed if torch.distributed.is_available() and torch.distributed.is_initialized() else None
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist else (0, 1)
    n = min(len(dataset), max_samples) if max_samples else len(dataset)
    indices = list(range(rank, n, world))
    # Same number of forwards on every rank (ZeRO-3 gathers parameters collectively): pad with weight 0.
    per_rank = math.ceil(n / world) if n else 0
    weights = [1.0] * len(indices) + [0.0] * (per_rank - len(indices))
    indices = indices + [indices[0] if indices else 0] * (per_rank - len(indices))
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64)
    try:
        for idx, w in zip(indices, weights):
            batch, _ = split_batch(collator([dataset[idx]]))
            if prepare is not None:  # the Trainer's _prepare_inputs: device, and DeepSpeed's dtype for floats
                batch = prepare(batch)
            else:
                batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            loss_sum, count = selective_lm_loss(model, batch)
            total += torch.tensor([float(loss_sum) * w, float(count) * w], dtype=torch.float64)
    finally:
        model.train(was_training)
    if dist is not None and world > 1:
        total = total.to(device)
        dist.all_reduce(total)
        total = total.cpu()
    tokens = int(total[1].item())
    return (float(total[0] / max(tokens, 1)), tokens)


class HeldoutLoss(TrainerCallback):
    """Held-out loss before training, every `every_steps` and at the end -> heldout_loss.json + logs."""

    def __init__(self, trainer, dataset, collator, max_samples: int = 16, every_steps: int = 0):
        self.trainer, self.dataset, self.collator = trainer, dataset, collator
        self.max_samples, self.every_steps = max_samples, every_steps
        self.path = Path(trainer.args.output_dir) / HELDOUT_FILE
        self._done: set[int] = set()

    def _measure(self, state, model):
        step = state.global_step
        if step in self._done:
            return
        self._done.add(step)
        loss, tokens = heldout_loss(model, self.dataset, self.collator, self.max_samples, self.trainer.args.device,
                                    prepare=self.trainer._prepare_inputs)
        if self.trainer.is_world_process_zero():
            record = {}
            if self.path.exists():
                try:
                    record = json.loads(self.path.read_text())
                except ValueError:
                    record = {}
            record[str(step)] = {"loss": loss, "tokens": tokens, "samples": min(len(self.dataset), self.max_samples or len(self.dataset))}
            os.makedirs(self.path.parent, exist_ok=True)
            write_json_atomic(self.path, record)
            print(f"held-out loss at step {step}: {loss:.4f} over {tokens} label tokens", flush=True)
        return loss

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._measure(state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every_steps and state.global_step % self.every_steps == 0:
            loss = self._measure(state, model)
            if loss is not None:
                log_metrics(self.trainer, {"eval/heldout_loss": loss})

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._measure(state, model)


def instantiate_callbacks(callbacks_cfg, trainer=None, processor=None) -> list:
    """The config's `callbacks:` node, {name: {_target_: pkg.Callback, ...kwargs}} -> TrainerCallback instances, in
    the node's order. A node without `_target_` is a UserError.

    A callback that needs the run's context defines `bind(trainer, processor)`; it is called once, before training
    (the trainer gives output_dir, args, the model and `trainer.log`; the processor feeds the stream template)."""
    if not callbacks_cfg:
        return []
    from hydra.utils import instantiate

    built = []
    for name, node in callbacks_cfg.items():
        if not hasattr(node, "get") or not node.get("_target_"):
            raise UserError(f"callbacks.{name} needs a _target_ (the callback's class), got {node!r}")
        cb = instantiate(node)
        if hasattr(cb, "bind"):
            cb.bind(trainer, processor)
        built.append(cb)
    return built
