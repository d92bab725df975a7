"""Time per stage (read, preprocess, vision, prefill, decode, eviction), without stalling the device.

A stage's interval runs between two marks: on CUDA events recorded on the current stream (the stage's span on the
device's timeline), read at `snapshot()` so nothing waits when they are made; on the CPU the host clock.
`section(stage, device=False)` times host work done while the device is busy with another stage.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch

STAGES = ("read", "preprocess", "vision", "prefill", "decode", "eviction")


class HostMark:
    """A point in host time, with the interface of a CUDA event that `Timings` uses."""

    def __init__(self):
        self.t = time.perf_counter()

    def elapsed_time(self, end: "HostMark") -> float:
        return (end.t - self.t) * 1000.0  # ms, as torch.cuda.Event.elapsed_time

    def synchronize(self) -> None:
        pass


class Timings:
    def __init__(self, device: torch.device | str | None = None):
        self.cuda = torch.device(device or "cpu").type == "cuda"
        self.total: dict[str, float] = {s: 0.0 for s in STAGES}
        self.pending: list[tuple[str, object, object, float]] = []  # (stage, start, end, sign): read later

    def mark(self):
        """Now, on the device's timeline (a CUDA event on the current stream) or the host's."""
        if not self.cuda:
            return HostMark()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def book(self, stage: str, start, end, sign: float = 1.0) -> None:
        """Add (sign +1) or take away (-1) the interval between two marks, read at the next `snapshot()`."""
        self.pending.append((stage, start, end, sign))

    def add(self, stage: str, seconds: float) -> None:
        self.total[stage] = self.total.get(stage, 0.0) + seconds

    @contextmanager
    def section(self, stage: str, device: bool = True):
        """Time `stage`; also a profiler range `stage:<name>` (bench/profile_second.py reads their GPU time).
        `device=False`: host time, for work done while the device is busy with another stage."""
        start = self.mark() if device else HostMark()
        try:
            with torch.profiler.record_function(f"stage:{stage}"):
                yield
        finally:
            self.book(stage, start, self.mark() if device else HostMark())

    def snapshot(self) -> dict[str, float]:
        """The totals so far, in seconds (waits for the device to pass the last mark)."""
        if self.pending:
            for _, _, end, _ in self.pending:
                end.synchronize()  # each mark's own stream: work on others (a second prepared ahead) runs on
            for stage, start, end, sign in self.pending:
                self.add(stage, sign * start.elapsed_time(end) / 1000.0)
            self.pending.clear()
        return dict(self.total)

    @staticmethod
    def diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
        return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}


@contextmanager
def wall_phase(phases: dict[str, float], name: str, device: torch.device | None = None):
    """Add the block's wall seconds to `phases[name]` (start-up's split). On CUDA the block ends with a synchronize,
    so the device work it queued counts in it, not in whatever waits for the device next."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - start
