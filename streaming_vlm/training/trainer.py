"""`StreamingTrainer`: the HF Trainer with our loss, bad-sample accounting, exact per-step losses and atomic
checkpoints. Everything else (DeepSpeed, gradient accumulation, schedulers, resume of model / optimizer /
scheduler / RNG / data position) is the HF Trainer's own machinery.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

import torch
from transformers import Trainer

from streaming_vlm.training import checkpoints
from streaming_vlm.training.loss import selective_lm_loss

log = logging.getLogger(__name__)

LOSS_LOG = "train_losses.jsonl"
# selective: logits only where labels exist (ours). hf: the model's own loss over full logits (the anchor recipe,
# kept for the throughput benchmark and ablations).
LOSS_IMPLS = ("selective", "hf")
LOSS_POSITIONS = "loss_positions"  # the collator's kept positions, carried with the model inputs to compute_loss


def _dist():
    return torch.distributed if torch.distributed.is_available() and torch.distributed.is_initialized() else None


def gather_counts(counts: dict[str, int]) -> dict[str, int]:
    """Sum {reason: n} over all ranks (every rank must call)."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return dict(counts)
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, dict(counts))
    total = Counter()
    for part in parts:
        total.update(part or {})
    return dict(total)


class StreamingTrainer(Trainer):
    def __init__(self, *args, attempt: str | None = None, bad_sample_tracker=None, loss_impl: str = "selective",
                 checkpoint_policy=None, embedding_lr: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.checkpoint_policy = checkpoint_policy  # checkpointing.CheckpointPolicy: which layers recompute
        if embedding_lr is not None and not float(embedding_lr) > 0:
            raise ValueError(f"trainer.embedding_learning_rate must be > 0 (or null), got {embedding_lr}")
        self.embedding_lr = None if embedding_lr is None else float(embedding_lr)
        self.tracker = bad_sample_tracker  # streaming_vlm.data.bad_samples.BadSampleTracker (max bad fraction)
        if loss_impl not in LOSS_IMPLS:
            raise ValueError(f"trainer.loss_impl must be one of {', '.join(LOSS_IMPLS)}, got {loss_impl!r}")
        self.loss_impl = loss_impl
        # Our compute_loss normalises by the label tokens of the whole optimizer step, so the Trainer must neither
        # divide by the accumulation steps again nor count tokens itself (we count in get_batch_samples).
        self.model_accepts_loss_kwargs = True
        self.loss_is_scaled_for_ga = True
        self.bad_samples_local: Counter = Counter()  # this rank, since the start of training (restored on resume)
        self.bad_samples_total: dict[str, int] = {}  # all ranks, refreshed every step
        self.seen_total = 0
        self._step_loss = 0.0
        self._step_lr: float | None = None
        self._step_samples: list[int] = []  # dataset indices of this rank's samples in the current step
        self.seen_local = 0  # samples asked for (good + bad) on this rank
        self.tokens_local = 0  # non-padding tokens (throughput records)
        self.vision_tokens_local = 0
        self.label_tokens_local = 0
        self._staging = False
        self.attempt = attempt or f"{os.getpid()}"

    # ---- optimizer ---------------------------------------------------------------------------------------------
    def create_optimizer(self, model=None):
        """The HF optimizer; with `embedding_lr`, the token embedding (the output head too, when tied) in a param
        group of its own at that learning rate, scheduled like the others.

        Why a group of its own: every step's softmax pushes the rows of the whole vocabulary, but a commentary
        model only ever emits a few hundred of them; a model whose body is small and trains for few steps needs
        the embedding to move faster than the body to put the rest of the vocabulary out of reach."""
        optimizer = super().create_optimizer(model)
        if self.embedding_lr is None:
            return optimizer
        opt_model = self.model if model is None else model
        embedding = opt_model.get_input_embeddings().weight
        moved = None
        for group in optimizer.param_groups:
            keep = [p for p in group["params"] if p is not embedding]
            if len(keep) != len(group["params"]):
                moved = {**group, "params": [embedding], "lr": self.embedding_lr}
                group["params"] = keep
        if moved is None:  # frozen embedding (LoRA): no group to give the rate to, and the run says so
            log.info("trainer.embedding_learning_rate: the token embedding is not trained here; one learning rate")
            return optimizer
        optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
        optimizer.add_param_group(moved)  # last: param_groups[0] stays the body's lr, which the logs report
        return optimizer

    # ---- batches ---------------------------------------------------------------------------------------------
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples = []
        for _ in range(num_batches):
            try:
                batch_samples.append(next(epoch_iterator))
            except StopIteration:
                break
        from streaming_vlm.data.collator import split_batch

        # Counts come from the collator's metadata (host integers): reading them off the device tensors would
        # stall the host once per micro-batch.
        n = 0
        inputs_list = []
        for batch in batch_samples:
            inputs, meta = split_batch(batch)
            counts = {k: int(v) for k, v in (meta.get("bad_samples") or {}).items() if v}
            self.bad_samples_local.update(counts)
            self.seen_local += int(meta.get("n_samples", 0))
            self.tokens_local += int(meta["num_tokens"])
            self.vision_tokens_local += int(meta.get("num_vision_tokens", 0))
            self._step_samples += list(meta.get("sample_index", []))
            if self.tracker is not None:
                self.tracker.add(counts, int(meta.get("n_samples", 0)))  # raises the one UserError if too bad
            labelled = int(meta["num_loss_tokens"])
            self.label_tokens_local += labelled
            n += labelled
            inputs[LOSS_POSITIONS] = meta["loss_positions"]
            inputs_list.append(inputs)
        batch_samples = inputs_list
        n = torch.tensor(n, dtype=torch.long).to(device, non_blocking=True)
        if self.args.world_size > 1:
            n = self.accelerator.gather(n.reshape(1)).sum()
        return batch_samples, n

    def _prepare_inputs(self, inputs):
        """The HF placement, then deferred frames (`data.process_frames=trainer`) through the video processor on
        this device: the collator's `video_frames` become `pixel_values_videos`, DeepSpeed's dtype included."""
        from streaming_vlm.data.collator import FRAMES_KEY
        from streaming_vlm.data.stream_template import process_frames

        frames = None
        if isinstance(inputs, dict) and FRAMES_KEY in inputs:
            inputs = dict(inputs)  # the caller's batch stays as it was
            frames = inputs.pop(FRAMES_KEY)
        inputs = super()._prepare_inputs(inputs)
        if frames:
            # already on the device when the DataLoader placed the batch (pinned, non-blocking); eval paths move here
            frames = self._prepare_input(frames)
            inputs["pixel_values_videos"] = self._prepare_input(process_frames(self.processing_class, frames,
                                                                               device=self.args.device))
        return inputs

    # ---- loss --------------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "bad_samples" in inputs:  # a raw collator batch (evaluation paths): keep the model inputs only
            from streaming_vlm.data.collator import split_batch

            inputs, _ = split_batch(inputs)
        inputs = dict(inputs)
        positions = inputs.pop(LOSS_POSITIONS, None)
        if self.loss_impl == "hf":
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        loss_sum, n, outputs = selective_lm_loss(model, inputs, return_outputs=True, positions=positions)
        if num_items_in_batch is None:  # evaluation / prediction_step: mean over this micro-batch
            loss = loss_sum / n.clamp(min=1)
        else:
            loss = loss_sum / torch.as_tensor(num_items_in_batch, device=loss_sum.device).clamp(min=1)
            if self.args.world_size > 1:
                # DDP / DeepSpeed average gradients over ranks; the step's token count is already global.
                loss = loss * self.args.world_size
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self._step_lr is None and self.optimizer is not None:  # the lr this optimizer step uses
            self._step_lr = float(self.optimizer.param_groups[0]["lr"])
        if self.checkpoint_policy is not None and self.args.gradient_checkpointing:
            self.checkpoint_policy.before_micro_batch(self.model, int(inputs["input_ids"].numel()), self.optimizer)
        loss = super().training_step(model, inputs, num_items_in_batch)
        # The scaled micro-batch losses of one optimizer step sum to (this rank's label-token CE) x world / tokens.
        # Kept on the device (no host sync per micro-batch); read once per step in pop_step_loss.
        self._step_loss = self._step_loss + loss.detach().to(torch.float64)
        return loss

    def pop_step_loss(self) -> float:
        """Token-averaged loss of the optimizer step that just ended, identical on every rank (collective)."""
        value = torch.as_tensor(self._step_loss, dtype=torch.float64).reshape(1).to(self.args.device)
        self._step_loss = 0.0
        dist = _dist()
        if dist is not None and dist.get_world_size() > 1:
            dist.all_reduce(value)
            value = value / dist.get_world_size()
        return float(value.item())

    # ---- logs --------------------------------------------------------------------------------------------------
    def log(self, logs, *args, **kwargs):
        """Adds per-reason bad-sample totals (index time + load time, all ranks) to every log."""
        totals = Counter(self.bad_samples_total)
        if self.tracker is not None:
            totals.update(self.tracker.index_bad)
        for reason, k in sorted(totals.items()):
            logs[f"data/bad/{reason}"] = k
        loaded_bad = sum(self.bad_samples_total.values())
        logs["data/bad_samples"] = loaded_bad
        if self.seen_total:
            logs["data/bad_fraction"] = round(loaded_bad / self.seen_total, 6)
        return super().log(logs, *args, **kwargs)

    def pop_step_lr(self) -> float | None:
        lr, self._step_lr = self._step_lr, None
        return lr

    def pop_step_samples(self) -> list[int]:
        samples, self._step_samples = self._step_samples, []
        return samples

    def append_loss_record(self, step: int, loss: float, lr: float | None, samples: list[int] | None = None,
                           **extra) -> None:
        if not self.is_world_process_zero():
            return
        os.makedirs(self.args.output_dir, exist_ok=True)
        rec = {"step": step, "loss": loss, "lr": lr, "attempt": self.attempt, "samples": samples, **extra}
        with open(Path(self.args.output_dir) / LOSS_LOG, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()

    # ---- checkpoints -------------------------------------------------------------------------------------------
    def _get_output_dir(self, trial):
        if self._staging:
            return os.path.join(self.args.output_dir, checkpoints.STAGING)
        return super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial):
        """Write the whole checkpoint under .staging/, then publish it with one atomic rename."""
        name = f"checkpoint-{self.state.global_step}"
        staged = os.path.join(self.args.output_dir, checkpoints.STAGING, name)
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = False
        self.accelerator.wait_for_everyone()  # every rank's DeepSpeed shards are on disk
        if self.args.should_save:
            extra = {"bad_samples_total": dict(self.bad_samples_total), "seen_total": self.seen_total,
                     "attempt": self.attempt}
            checkpoints.publish(staged, self.args.output_dir, self.state.global_step, extra_state=extra)
            checkpoints.rotate(self.args.output_dir, self.args.save_total_limit)
        self.accelerator.wait_for_everyone()

    def restore_extra_state(self, checkpoint: str | os.PathLike) -> None:
        """Our state beyond HF's (bad-sample counters); call before train(resume_from_checkpoint=...)."""
        extra = checkpoints.read_extra_state(checkpoint)
        totals = Counter({k: int(v) for k, v in (extra.get("bad_samples_total") or {}).items()})
        # The counters are summed over ranks at every step: carry the restored total on rank 0 only.
        seen = int(extra.get("seen_total", 0))
        if self.is_world_process_zero():
            self.bad_samples_local, self.seen_local = Counter(totals), seen
            if self.tracker is not None:
                self.tracker.counts, self.tracker.seen = Counter(totals), seen
        else:
            self.bad_samples_local, self.seen_local = Counter(), 0
        self.bad_samples_total, self.seen_total = dict(totals), seen
