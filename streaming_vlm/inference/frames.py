"""Frame sources: iterables of the stream's whole seconds as template `Second`s with absolute timestamps, with
`duration` (seconds to come; None: live) and `live` (a live source's next second is not there while a reply decodes).

`open_source` picks a file (`VideoFrameSource`) or a live stream (`live_source.py`). Both decode with PyAV and cut
seconds with `sampled_seconds` by training's rule (`data.video.Ticks`), so a file gives exactly the frames training's
decord reader takes. A file is decoded with the codec's threads, only sampled frames become RGB, and `ReadAhead`
reads ahead on a thread (PyAV releases the GIL), overlapping the device's work. A bad file is one `UserError` line.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Iterable, Iterator

import numpy as np

from streaming_vlm.data.stream_template import Second
from streaming_vlm.data.video import Ticks
from streaming_vlm.errors import UserError


def sampled_seconds(frames: Iterable, ticks: Ticks, first: int = 0, until: float | None = None,
                    repeat: bool = True) -> Iterator[Second]:
    """Whole seconds [s, s+1) from s = `first`, cut from `frames` `(stream time, clock on ticks, PyAV frame)` in
    presentation order, sampled by `ticks`. A frame that is the first after several ticks is taken for each (a file,
    as decord does), or once with `repeat=False` (live: a gap leaves no pile of copies). A late frame is passed over;
    one at or after `until` ends the reading. A second goes out once complete (its last tick has a frame, or a later
    second's frame arrives); one with no frame goes out empty; the last one read goes out if it has frames."""
    tick, second, images, times, shape = ticks.first(first), first, [], [], (0, 0)

    def done():
        nonlocal second, images, times
        batch = np.stack(images) if images else np.zeros((0, *shape, 3), np.uint8)
        out = Second(float(second), float(second + 1), batch, times)
        second, images, times = second + 1, [], []
        return out

    for t, clock, frame in frames:
        if until is not None and t >= until:
            break
        if t < second:
            continue
        shape = (frame.height, frame.width)
        while t >= second + 1:  # earlier seconds are complete
            yield done()
        taken = 0
        while ticks.clock(tick) <= clock:  # the ticks this frame is the first frame at or after
            tick, taken = tick + 1, taken + 1
        if taken:
            taken = taken if repeat else 1
            images += [frame.to_ndarray(format="rgb24")] * taken
            times += [t] * taken
            if ticks.first(second + 1) <= tick:  # its last tick has a frame
                yield done()
    if images:
        yield done()


def open_video(target, name: str, verb: str = "decode", **options):
    """`av.open(target, **options)` and its first video stream, or a UserError with one line."""
    import av

    try:
        container = av.open(target, **options)
    except (av.error.FFmpegError, OSError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise UserError(f"cannot {verb} {name}: {reason.splitlines()[0] if reason else type(err).__name__}") from None
    if not container.streams.video:
        container.close()
        raise UserError(f"no video stream in {name}")
    return container, container.streams.video[0]


class ReadAhead:
    """Iterate `items` on a thread, up to `depth` ahead; its exception is raised in the consumer; closing stops it."""

    def __init__(self, items: Iterator, depth: int = 4):
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.stop = threading.Event()
        threading.Thread(target=self._pump, args=(items,), name="video-read-ahead", daemon=True).start()

    def _pump(self, items) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
            self._put(StopIteration())
        except Exception as err:  # noqa: BLE001 - raised in the consumer
            self._put(err)

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def __iter__(self) -> Iterator:
        try:
            while not isinstance(item := self.queue.get(), StopIteration):
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.stop.set()


class VideoFrameSource:
    """A video file at `fps` from `start` to `end` (default: its end), read `read_ahead` seconds ahead on a thread."""

    live = False  # a file's next second is there already: the engine may read it while a reply decodes

    def __init__(self, path, fps: float = 2.0, start: float = 0.0, end: float | None = None, read_ahead: int = 4):
        if fps <= 0:
            raise UserError(f"fps must be > 0, got {fps}")
        self.path, self.fps = str(path), float(fps)
        self.start, self.end, self.read_ahead = float(start), end, read_ahead
        if not os.path.isfile(self.path):
            raise UserError(f"video not found: {self.path}")
        if os.path.getsize(self.path) == 0:
            raise UserError(f"video is empty (0 bytes): {self.path}")
        container, stream = open_video(self.path, f"video {self.path}")  # a corrupt file fails here, not mid-stream
        self.native = float(stream.average_rate or stream.guessed_rate or 0)
        self.frames = int(stream.frames or round((container.duration or 0) / 1e6 * self.native))
        container.close()
        if self.native <= 0 or not self.frames:
            raise UserError(f"video has no frames: {path}")
        self.file_duration = self.frames / self.native
        if self.start > 0 and self.start >= self.file_duration:
            raise UserError(f"start {self.start:g} s is past the end of the video ({self.file_duration:.1f} s): {path}")

    @property
    def duration(self) -> float:
        end = self.file_duration if self.end is None else min(self.end, self.file_duration)
        return max(0.0, end - self.start)

    def __iter__(self) -> Iterator[Second]:
        return iter(ReadAhead(self.read(), self.read_ahead))

    def read(self) -> Iterator[Second]:
        """The seconds [s, s+1) from floor(start) to ceil(end), as decord's `VideoReader.iter_seconds` takes them (a
        frame's clock is its native index; frames past the file's frame count are not read)."""
        import av

        first = int(math.floor(self.start))
        last = math.ceil(self.file_duration if self.end is None else min(self.end, self.file_duration))
        container, stream = open_video(self.path, f"video {self.path}")
        stream.thread_type = "AUTO"
        base = stream.start_time or 0

        def frames():
            if first > 0:
                container.seek(base + int(first / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is not None:
                    index = round(float((frame.pts - base) * stream.time_base) * self.native)
                    if index >= self.frames:
                        return
                    yield index / self.native, index, frame

        second = first
        try:
            for out in sampled_seconds(frames(), Ticks(self.fps, self.native), first, until=last):
                second = int(out.end)
                yield out
        except av.error.FFmpegError as err:
            raise UserError(f"cannot decode {self.path} near {second} s: {err}") from None
        finally:
            container.close()
        empty = np.zeros((0, stream.height, stream.width, 3), np.uint8)
        yield from (Second(float(s), float(s + 1), empty, []) for s in range(second, last))  # no frame there


def open_source(path, fps: float = 2.0, start: float = 0.0, end: float | None = None, **live):
    """A file (`VideoFrameSource`), or a URL, a V4L2 device or `-` read live (`LiveFrameSource`, given `live`)."""
    from streaming_vlm.inference.live_source import LiveFrameSource, is_live

    if is_live(path):
        return LiveFrameSource(str(path), fps, start=start, end=end, **live)
    return VideoFrameSource(path, fps, start=start, end=end)
