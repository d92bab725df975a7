"""Broadcast-like H.264 test files for the CLI benchmarks, written with PyAV (not the project's synthetic
generator): a textured pitch that pans, moving players and a scrolling score bar, so the encoder has real motion
and detail to code, at any size and frame rate.

    python bench/video_files.py --out /tmp/v1080p50.mp4 --width 1920 --height 1080 --fps 50 --seconds 120

A long file is written as segments in parallel processes (one per core, each a whole number of GOPs that starts
with a keyframe), then joined into one mp4 by copying their packets with shifted timestamps (no re-encoding), so a
GPU job does not spend minutes of device time on its inputs. The result is one H.264 stream, as a single encoder
would write it up to the keyframe placement.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixture_video import encode_h264  # noqa: E402


def _frames(first: int, count: int, fps: int, width: int, height: int, seed: int):
    """Frames `first` .. `first + count - 1` of the broadcast-like picture (each frame depends only on its index)."""
    rng = np.random.default_rng(seed)
    # a pitch texture twice as wide as the frame, panned across
    _, xx = np.mgrid[0:height, 0:2 * width]
    stripes = ((xx // max(8, width // 12)) % 2).astype(np.int16) * 18
    grain = rng.integers(-12, 12, size=(height, 2 * width), dtype=np.int16)
    pitch = np.stack([40 + stripes + grain, 120 + stripes + grain, 40 + grain], -1).clip(0, 255).astype(np.uint8)
    players = rng.uniform(0, 1, size=(22, 4))  # x, y, vx, vy
    size = max(4, height // 40)
    for i in range(first, first + count):
        t = i / fps
        pan = int((np.sin(t / 7) * 0.5 + 0.5) * (width - 1))
        frame = pitch[:, pan:pan + width].copy()
        for k, (x, y, vx, vy) in enumerate(players):
            px = int(((x + 0.05 * t * (vx - 0.5)) % 1) * (width - size))
            py = int(((y + 0.05 * t * (vy - 0.5)) % 1) * (height - size))
            frame[py:py + size, px:px + size] = (230, 30, 30) if k < 11 else (240, 240, 240)
        bar = frame[height - height // 12:, :]
        bar[:] = 20
        bar[:, (i * 7) % width:(i * 7) % width + width // 10] = 200
        yield frame


def _write_segment(path, first, count, fps, width, height, seed, options) -> Path:
    return encode_h264(path, _frames(first, count, fps, width, height, seed), fps, width, height, options)


def _join(path, segments: list[tuple[Path, int]], fps: int) -> None:
    """One mp4 from `segments` (file, index of its first frame): packets copied, timestamps shifted by the start."""
    import av

    with av.open(str(path), "w") as out:
        stream = None
        for segment, first in segments:
            with av.open(str(segment)) as inp:
                source = inp.streams.video[0]
                if stream is None:
                    stream = out.add_stream_from_template(source)
                shift = round(first / fps / source.time_base)
                for packet in inp.demux(source):
                    if packet.dts is None:  # the demuxer's end-of-stream packet
                        continue
                    packet.pts += shift
                    packet.dts += shift
                    packet.stream = stream
                    out.mux(packet)


def write_broadcast_like(path, seconds: float, fps: int, width: int, height: int, seed: int = 0,
                         preset: str = "veryfast", gop: int | None = None, workers: int | None = None) -> Path:
    path = Path(path)
    gop = gop or 2 * fps
    options = {"preset": preset, "g": str(gop), "keyint_min": str(gop), "bf": "2"}
    total = max(1, int(round(seconds * fps)))
    gops = -(-total // gop)
    workers = max(1, min(workers or os.cpu_count() or 1, gops))
    if workers == 1:
        return _write_segment(path, 0, total, fps, width, height, seed, options)
    starts = [gops * k // workers * gop for k in range(workers)] + [total]
    parts = [(path.with_name(f"{path.stem}.part{k}.mp4"), starts[k]) for k in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        jobs = [pool.submit(_write_segment, part, first, starts[k + 1] - first, fps, width, height, seed, options)
                for k, (part, first) in enumerate(parts)]
        for job in jobs:
            job.result()
    _join(path, parts, fps)
    for part, _ in parts:
        part.unlink()
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--fps", type=int, default=50)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--preset", default="veryfast")
    p.add_argument("--workers", type=int, default=None, help="processes writing segments (default: one per core)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    write_broadcast_like(args.out, args.seconds, args.fps, args.width, args.height, preset=args.preset,
                         workers=args.workers)
    print(f"{args.out}: {args.width}x{args.height} {args.fps} fps {args.seconds:g} s in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
