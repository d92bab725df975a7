"""Causal-LM loss that projects onto the vocabulary only where a label exists.

The lm_head (vocab 151936) dominates compute and memory on small models and long vision-heavy sequences, but only
the assistant replies carry labels. The model is called with `logits_to_keep` = the positions t whose next token
t+1 is labelled (the union over the batch rows; exact for batch size 1, the recipe's), so the lm_head sees those
positions only. Cross-entropy is summed in fp32; the caller divides by the number of label tokens of the whole
optimizer step (all micro-batches, all ranks), which makes gradient accumulation and data parallelism exact.

A micro-batch with no label at all (e.g. every sample in it was skipped as bad data) still runs the full forward
and backward on the last position with weight 0: the loss is 0 but every trainable parameter gets a (zero)
gradient, so ZeRO-3's per-parameter gradient hooks fire identically on every rank and nothing deadlocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def count_label_tokens(labels: torch.Tensor) -> torch.Tensor:
    """Tokens that contribute to the loss (labels shifted by one, as the causal loss uses them)."""
    return (labels[..., 1:] != IGNORE_INDEX).sum()


def kept_positions(labels: torch.Tensor) -> torch.Tensor:
    """Positions t (0-based, < L-1) whose target labels[:, t+1] is set, in any row."""
    valid = labels[:, 1:] != IGNORE_INDEX
    return valid.any(dim=0).nonzero(as_tuple=False).squeeze(1)


def selective_lm_loss(model, inputs: dict, return_outputs: bool = False, positions: torch.Tensor | None = None):
    """Summed cross-entropy over label tokens and the number of such tokens: (loss_sum, n_tokens[, outputs]).

    `positions`: `kept_positions(labels)` computed ahead (the collator does it on the CPU, so the training step
    has no host sync here); computed from `labels` when not given."""
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    keep = kept_positions(labels) if positions is None else positions.to(labels.device, non_blocking=True)
    empty = keep.numel() == 0
    if empty:
        keep = torch.tensor([labels.shape[1] - 1], device=labels.device)
    inputs["use_cache"] = False
    outputs = model(**inputs, logits_to_keep=keep)
    logits = outputs.logits  # (B, K, V)
    if empty:
        loss_sum = logits.sum() * 0.0
        n = torch.zeros((), dtype=torch.long, device=labels.device)
    else:
        targets = labels[:, 1:][:, keep]  # (B, K)
        loss_sum = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                   ignore_index=IGNORE_INDEX, reduction="sum")
        n = (targets != IGNORE_INDEX).sum()
    if return_outputs:
        return loss_sum, n, outputs
    return loss_sum, n


def full_lm_loss(model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: logits everywhere, then the same summed cross-entropy (tests compare the two)."""
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    inputs["use_cache"] = False
    logits = model(**inputs).logits
    shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    shift_labels = labels[:, 1:].reshape(-1)
    loss_sum = F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return loss_sum, (shift_labels != IGNORE_INDEX).sum()
