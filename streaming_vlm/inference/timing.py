"""Wall-clock time per stage (read, preprocess, vision, prefill, decode, eviction), CUDA-synchronised."""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch

STAGES = ("read", "preprocess", "vision", "prefill", "decode", "eviction")


class Timings:
    def __init__(self, device: torch.device | str | None = None, sync: bool = True):
        self.sync = sync and torch.device(device or "cpu").type == "cuda"
        self.total: dict[str, float] = {s: 0.0 for s in STAGES}

    def now(self, sync: bool = True) -> float:
        if self.sync and sync:
            torch.cuda.synchronize()
        return time.perf_counter()

    def add(self, stage: str, seconds: float) -> None:
        self.total[stage] = self.total.get(stage, 0.0) + seconds

    @contextmanager
    def section(self, stage: str, sync: bool = True):
        """Time `stage`; also a profiler range `stage:<name>` (bench/profile_second.py reads their GPU time).
        `sync=False`: host time only, no device sync (work done while the device is busy with another stage)."""
        t0 = self.now(sync)
        try:
            with torch.profiler.record_function(f"stage:{stage}"):
                yield
        finally:
            self.add(stage, self.now(sync) - t0)

    def snapshot(self) -> dict[str, float]:
        return dict(self.total)

    @staticmethod
    def diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
        return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
