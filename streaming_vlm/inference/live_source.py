"""Live frame sources through PyAV: an HLS playlist over http(s), rtsp://, a V4L2 device (/dev/videoN), or `-` (an
MPEG-TS or fragmented MP4 byte stream on stdin).

A reader thread decodes the stream as it arrives and cuts it into whole seconds as files are (`sampled_seconds`);
stream time is a frame's presentation time minus the first frame's. The engine
- never waits for more than the next second: a second is handed over as soon as it is complete;
- when behind, loses whole seconds, oldest first (at most `max_lag` complete seconds wait), reported with seconds
  that had no frame by `take_skipped()` as `{"type": "skipped", "start", "end", "reason": "behind" | "gap"}` runs;
- ends cleanly when the stream ends, fails, or stalls (no frame for `stall_timeout` s): queued seconds are handed
  over first, and `end_reason` says why.
The source is opened at construction, before any model loads (a bad URL is one `UserError` line), and `close()`
waits for the reader thread, so that no thread is left inside FFmpeg at exit.
"""

from __future__ import annotations

import collections
import math
import os
import select
import threading
import time
from typing import Iterator
from urllib.parse import urlsplit

from streaming_vlm.data.stream_template import Second
from streaming_vlm.data.video import Ticks
from streaming_vlm.errors import UserError
from streaming_vlm.inference.frames import open_video, sampled_seconds

URL_SCHEMES = ("http", "https", "rtsp", "rtsps")
STDIN = "-"
# a live stream is probed for its container and codec parameters from what arrives first: keep that short, or
# the open would wait for seconds of stream (FFmpeg reads up to 1 MB to guess a container from a pipe)
PROBE_OPTIONS = {"formatprobesize": "4096", "analyzeduration": "500000", "probesize": "1000000"}


def is_live(path: str) -> bool:
    """A URL, a V4L2 device or stdin: everything the CLI's --video_path takes that is not a file."""
    path = str(path)
    return path == STDIN or "://" in path or path.startswith("/dev/video")


def open_live(path: str, open_timeout: float, read_timeout: float, stdin=None):
    """The PyAV container of a live path (`-`: read from `stdin`, a file object) and its first video stream."""
    target, fmt, options = path, None, dict(PROBE_OPTIONS)
    if path == STDIN:
        target = stdin
    elif path.startswith("/dev/video"):
        fmt = "v4l2"
    elif (scheme := urlsplit(path).scheme.lower()) not in URL_SCHEMES:
        raise UserError(f"unsupported URL scheme {scheme!r} in {path}: live sources are http(s) (HLS), rtsp(s), "
                        f"/dev/videoN or - (stdin)")
    elif scheme.startswith("rtsp"):
        options["rtsp_transport"] = "tcp"  # interleaved in the RTSP connection: no UDP ports to open
    container, stream = open_video(target, f"live source {path}", "open", format=fmt, options=options,
                                   timeout=(open_timeout, read_timeout))
    stream.thread_type = "SLICE"  # frame threading would hold frames back by one per thread
    return container, stream


class _Stdin:
    """fd 0 as the file PyAV reads `-` from, polled briefly, so `close()` ends a read however long the pipe is silent
    (FFmpeg's own read would block until data comes)."""

    def __init__(self, source: "LiveFrameSource"):
        self.source = source

    def read(self, size: int) -> bytes:
        while not self.source.closed:
            if select.select([0], [], [], 0.1)[0]:
                return os.read(0, size)
        return b""


class LiveFrameSource:
    """Whole seconds of a live stream, in real time; `end`: the stream second to stop at (None: its end).
    `max_lag` >= 1 and `stall_timeout` > 0 are the caller's to check (`StreamingConfig.validate` does)."""

    live = True
    duration = None  # unknown: the stream goes on until it ends

    def __init__(self, path: str, fps: float = 2.0, start: float = 0.0, end: float | None = None,
                 max_lag: float = 2.0, stall_timeout: float = 10.0, open_timeout: float = 10.0):
        if fps < 1:
            raise UserError(f"a live source needs fps >= 1 (every second must have a frame), got {fps:g}")
        if start:
            raise UserError("start applies to files only: a live source starts where it is joined")
        self.path, self.fps, self.end = str(path), float(fps), end
        self.capacity = int(math.floor(max_lag))
        self.stall_timeout = float(stall_timeout)
        self.closed = False
        self.container, self.stream = open_live(self.path, open_timeout, stall_timeout,
                                                _Stdin(self) if self.path == STDIN else None)
        self.cond = threading.Condition()
        self.ready: collections.deque[tuple[Second, float]] = collections.deque()  # (second, arrival time)
        self.skipped: list[dict] = []
        self.skipped_seconds = 0
        self.end_reason: str | None = None  # set when the reader stops: "ended", "stalled", "error: ...", ...
        self.last_arrival: float | None = None  # arrival time of the last second handed to the engine
        self.last_frame_at = time.monotonic()
        self.last_time = 0.0  # stream time of the last frame read
        self.reader = threading.Thread(target=self._read, name="live-source", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        import av

        until = None if self.end is None else math.ceil(self.end)
        reason = "ended"
        try:
            for second in sampled_seconds(self._frames(), Ticks(self.fps), until=until, repeat=False):
                with self.cond:
                    if len(second.frames):
                        self._queue(second)
                    else:  # the stream had no frame in this second
                        self._skip(int(second.start), int(second.end), "gap")
            if self.closed:
                reason = "closed"
            elif until is not None and self.last_time >= until:
                reason = f"reached second {self.end:g}"
        except av.ExitError:  # FFmpeg's read timed out: nothing arrived for stall_timeout seconds
            reason = "stalled"
        except (av.FFmpegError, OSError) as err:
            reason = f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        finally:
            self.container.close()
        with self.cond:
            if self.end_reason is None:
                self.end_reason = reason
            self.cond.notify_all()

    def _frames(self) -> Iterator[tuple[float, float, object]]:
        """The decoded frames for `sampled_seconds`, stream time as the clock; stops once `close()` was called."""
        first = None
        for frame in self.container.decode(self.stream):
            if self.closed:
                return
            self.last_frame_at = time.monotonic()
            if frame.pts is None:
                continue
            first = frame.pts if first is None else first
            self.last_time = t = float((frame.pts - first) * frame.time_base)
            yield t, t, frame

    def _queue(self, second: Second) -> None:
        """Queue a complete second (lock held); drop the oldest waiting one when `capacity` already wait."""
        while len(self.ready) >= self.capacity:
            dropped, _ = self.ready.popleft()
            self._skip(int(dropped.start), int(dropped.end), "behind")
        self.ready.append((second, time.monotonic()))
        self.cond.notify_all()

    def _skip(self, start: int, end: int, reason: str) -> None:
        last = self.skipped[-1] if self.skipped else None
        if last is not None and last["reason"] == reason and last["end"] == start:
            last["end"] = float(end)
        else:
            self.skipped.append({"type": "skipped", "start": float(start), "end": float(end), "reason": reason})
        self.skipped_seconds += end - start

    def __iter__(self) -> Iterator[Second]:
        waiting_since = time.monotonic()
        while True:
            with self.cond:
                while not self.ready and self.end_reason is None:
                    idle = time.monotonic() - max(self.last_frame_at, waiting_since)
                    if idle >= self.stall_timeout:
                        self.end_reason = "stalled"
                        break
                    self.cond.wait(self.stall_timeout - idle)
                if not self.ready:
                    return
                second, self.last_arrival = self.ready.popleft()
            yield second
            waiting_since = time.monotonic()

    def take_skipped(self) -> list[dict]:
        """Skipped runs recorded since the last call, oldest first."""
        with self.cond:
            out, self.skipped = self.skipped, []
        return out

    def lag(self) -> float:
        """Seconds since the last second handed to the engine became complete (0 before any)."""
        return 0.0 if self.last_arrival is None else time.monotonic() - self.last_arrival

    def close(self) -> bool:
        """Stop reading and wait for the reader thread (a network read returns within `stall_timeout`). False if it
        has not ended 5 s after that (a stopped V4L2 device: its read has no timeout); it is a daemon thread."""
        self.closed = True
        self.reader.join(self.stall_timeout + 5.0)
        return not self.reader.is_alive()
