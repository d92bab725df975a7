"""Counting what a piece of code asks of the device: tensor ops (on a GPU, about its kernel launches) and host
syncs, read from a CPU profile of one call."""

from __future__ import annotations

import torch

SYNCS = ("aten::item", "aten::_local_scalar_dense", "aten::repeat_interleave", "aten::nonzero")
# views, allocations and dtype/device wrappers: no kernel of their own
FREE = {"aten::empty", "aten::empty_strided", "aten::empty_like", "aten::as_strided", "aten::view", "aten::slice",
        "aten::select", "aten::unsqueeze", "aten::expand", "aten::reshape", "aten::_reshape_alias", "aten::detach",
        "aten::lift_fresh", "aten::alias", "aten::t", "aten::transpose", "aten::resolve_conj", "aten::resolve_neg",
        "aten::to", "aten::_to_copy", "aten::split", "aten::unbind", "aten::permute", "aten::flatten"}


def count_ops(fn) -> tuple[int, int]:
    """(top-level tensor ops, host syncs) of one call of `fn`."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.events()
    ops = sum(1 for e in events if e.name.startswith("aten::") and e.name not in FREE
              and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")))
    return ops, sum(1 for e in events if e.name in SYNCS)
