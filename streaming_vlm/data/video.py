"""Strict-fps frame reading with decord, with absolute timestamps, and the sampling rule every reader uses (`Ticks`).

For each tick k/fps (k = 0, 1, …) the frame taken is the first native frame at or after the tick, so a 2 fps read of
a 24 fps file takes native frames 0, 12, 24, … and stamps each with its own time (index / native fps).

decord is imported and the file opened lazily, on first use, so a `VideoReader` built in the parent process and
sent to DataLoader workers opens its own handle inside each worker (decord handles do not survive fork).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import numpy as np

if TYPE_CHECKING:  # the template (and transformers behind it) loads only when seconds are built
    from streaming_vlm.data.stream_template import Second


_INHERITED_HANDLES: list = []  # decord handles a forked process got from its parent; kept alive, never used


def as_numpy(batch) -> np.ndarray:
    """A decord NDArray as a numpy array over the same memory (DLPack through torch), without decord's `asnumpy`
    copy of the whole batch: the frames of a training window are read once and handed straight to the processor."""
    import torch

    return torch.utils.dlpack.from_dlpack(batch.to_dlpack()).numpy()


class Ticks:
    """The per-second sampling rule of every reader: training's decord reader here, the CLI's PyAV file and live
    readers (inference/frames.py, inference/live_source.py). For each tick k/fps (k = 0, 1, …) the frame taken is the
    first frame at or after it; a frame that is the first after several ticks is taken for each of them (a live
    reader takes it once: `frames.sampled_seconds`).

    Ticks are compared with frames on a clock of `rate` units a second: a file's native frame index (rate = its native
    fps, so a tick that falls on a frame is exact) or a live stream's seconds (rate 1). A tick is rounded to 6
    decimals on that clock, so float error never moves it past the frame it falls on."""

    def __init__(self, fps: float, rate: float = 1.0):
        self.fps, self.rate = float(fps), float(rate)

    def first(self, t: float) -> int:
        """The first tick at or after second `t`."""
        return math.ceil(round(t * self.fps, 6))

    def clock(self, k: int) -> float:
        """Tick k on the frame clock: a frame at `clock(k)` or later is at or after it."""
        return round(k / self.fps * self.rate, 6)


class VideoError(Exception):
    """The file is missing, unreadable, or has no frames."""


@dataclass
class Frames:
    frames: np.ndarray  # (n, H, W, 3) uint8
    times: list[float]  # absolute seconds
    indices: list[int]  # native frame indices


class VideoReader:
    def __init__(self, path: str | os.PathLike, fps: float = 2.0, num_threads: int = 1):
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.path = str(path)
        self.fps = float(fps)
        self.num_threads = num_threads
        self._reader = None
        self._pid = None

    # ---- lazy, per-process handle ----------------------------------------------------------------------------
    @property
    def reader(self):
        if self._reader is not None and self._pid != os.getpid():
            # A handle inherited through fork (a DataLoader worker): never destroy it here -- its destructor joins
            # threads that only exist in the parent and aborts ("std::system_error") or hangs the worker.
            _INHERITED_HANDLES.append(self._reader)
            self._reader = None
        if self._reader is None:
            if not os.path.isfile(self.path):
                raise VideoError(f"video not found: {self.path}")
            if os.path.getsize(self.path) == 0:
                raise VideoError(f"video is empty (0 bytes): {self.path}")
            import decord

            try:
                self._reader = decord.VideoReader(self.path, num_threads=self.num_threads)
            except Exception as err:  # decord raises DECORDError / RuntimeError on corrupt files
                raise VideoError(f"cannot decode video {self.path}: {str(err).splitlines()[0]}") from None
            if len(self._reader) == 0:
                raise VideoError(f"video has no frames: {self.path}")
            self._pid = os.getpid()
        return self._reader

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_reader"], state["_pid"] = None, None
        return state

    @property
    def native_fps(self) -> float:
        return float(self.reader.get_avg_fps())

    @property
    def num_frames(self) -> int:
        return len(self.reader)

    @property
    def duration(self) -> float:
        return self.num_frames / self.native_fps

    # ---- reading ---------------------------------------------------------------------------------------------
    def indices_between(self, t0: float, t1: float) -> list[int]:
        """Native indices for the ticks in [t0, t1): the first frame at or after each tick."""
        ticks = Ticks(self.fps, self.native_fps)
        out = []
        for k in range(ticks.first(t0), ticks.first(t1)):
            idx = math.ceil(ticks.clock(k))
            if idx >= self.num_frames:
                break
            out.append(idx)
        return out

    def read(self, t0: float, t1: float) -> Frames:
        """Frames for ticks in [t0, t1), decoded in one batch."""
        return self.frames_at(self.indices_between(t0, t1))

    def frames_at(self, indices: list[int]) -> Frames:
        """The native frames at `indices`, decoded in one batch."""
        if not indices:
            h, w = self.reader[0].shape[:2]
            return Frames(np.zeros((0, h, w, 3), np.uint8), [], [])
        try:
            batch = as_numpy(self.reader.get_batch(indices))
        except Exception as err:
            raise VideoError(f"cannot decode frames {indices[0]}..{indices[-1]} of {self.path}: "
                             f"{str(err).splitlines()[0]}") from None
        native = self.native_fps
        return Frames(batch, [i / native for i in indices], indices)

    def seconds(self, t0: float, t1: float, texts: dict[int, str] | None = None) -> list[Second]:
        """Whole seconds [s, s+1) for s in [floor(t0), ceil(t1)), as template `Second`s.

        A frame belongs to the second its time falls in. `texts` maps a second's start to its words. Seconds past
        the end of the file are not returned; below 1 fps some seconds carry no frames.
        """
        from streaming_vlm.data.stream_template import Second

        frames = self.read(math.floor(t0), math.ceil(t1))
        last = min(math.ceil(t1), math.ceil(self.duration))
        out = []
        for s in range(int(math.floor(t0)), int(last)):
            keep = [i for i, t in enumerate(frames.times) if s <= t < s + 1]  # consecutive: times only grow
            images = frames.frames[keep[0]:keep[-1] + 1] if keep else frames.frames[:0]  # a view, not a copy
            out.append(Second(float(s), float(s + 1), images, [frames.times[i] for i in keep],
                              None if texts is None else texts.get(s, "")))
        return out

    def iter_seconds(self, start: float = 0.0, end: float | None = None, block: int = 16) -> Iterator[Second]:
        """Stream whole seconds from `start` to `end` (default: the end of the file), decoding `block` s at a time."""
        end = self.duration if end is None else min(end, self.duration)
        t = int(math.floor(start))
        while t < end:
            t_next = min(t + block, math.ceil(end))
            yield from self.seconds(t, t_next)
            t = t_next
