"""Reading a video file for the stream, on the CPU: ms of wall time per stream second, and how much of it the
stream still waits for once reading runs ahead on a thread (`VideoFrameSource`).

    python bench/video_read.py --video v1080p50.mp4 --fps 2 --work_ms 40

Rows: decord as training reads (`data/video.py` `VideoReader.iter_seconds`, 16 s blocks, one thread); PyAV
converting every frame; PyAV converting only the sampled frames, without and with the codec's threads; and the
CLI's source (`VideoFrameSource`: PyAV, sampled frames only, codec threads, read ahead on a background thread),
consumed by a loop that holds each second for `--work_ms` (the device's work on it: a wait that releases the GIL,
as waiting on CUDA does), where the row gives the time the loop waited for its next second.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def decord_seconds(path, fps):
    from streaming_vlm.data.video import VideoReader

    return sum(1 for _ in VideoReader(path, fps=fps).iter_seconds())


def pyav_seconds(path, fps, threads: bool, convert_all: bool):
    import av

    container = av.open(path)
    stream = container.streams.video[0]
    if threads:
        stream.thread_type = "AUTO"
    native, tick, n = float(stream.average_rate), 0, 0
    for index, frame in enumerate(container.decode(stream)):
        sampled = index == math.ceil(round(tick / fps * native, 6))
        if convert_all or sampled:
            frame.to_ndarray(format="rgb24")
        tick += sampled
        n = index + 1
    container.close()
    return n / native


def source_wait(path, fps, work_ms):
    from streaming_vlm.inference.frames import VideoFrameSource

    waited, seconds = 0.0, 0
    it = iter(VideoFrameSource(path, fps))
    while True:
        t0 = time.perf_counter()
        second = next(it, None)
        waited += time.perf_counter() - t0
        if second is None:
            return waited, seconds
        seconds += 1
        time.sleep(work_ms / 1000)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--video", required=True)
    p.add_argument("--fps", type=float, default=2.0)
    p.add_argument("--work_ms", type=float, default=40.0)
    args = p.parse_args(argv)
    rows = []
    for name, fn in [("decord, training's reader (16 s blocks)", lambda: decord_seconds(args.video, args.fps)),
                     ("PyAV, every frame converted", lambda: pyav_seconds(args.video, args.fps, False, True)),
                     ("PyAV, sampled frames converted", lambda: pyav_seconds(args.video, args.fps, False, False)),
                     ("PyAV, sampled frames, codec threads", lambda: pyav_seconds(args.video, args.fps, True, False))]:
        t0 = time.perf_counter()
        seconds = fn()
        rows.append((name, 1000 * (time.perf_counter() - t0) / seconds))
    waited, seconds = source_wait(args.video, args.fps, args.work_ms)
    rows.append((f"CLI source (read ahead), stream waits, {args.work_ms:g} ms device work a second",
                 1000 * waited / seconds))
    print(f"| {Path(args.video).name}: reader | ms per stream second |\n|---|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.0f} |")


if __name__ == "__main__":
    main()
