"""Broadcast-like H.264 test files for the CLI benchmarks, written with PyAV (not the project's synthetic
generator): a textured pitch that pans, moving players and a scrolling score bar, so the encoder has real motion
and detail to code, at any size and frame rate.

    python bench/video_files.py --out /tmp/v1080p50.mp4 --width 1920 --height 1080 --fps 50 --seconds 120
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixture_video import encode_h264  # noqa: E402


def write_broadcast_like(path, seconds: float, fps: int, width: int, height: int, seed: int = 0,
                         preset: str = "veryfast", gop: int | None = None) -> Path:
    rng = np.random.default_rng(seed)
    # a pitch texture twice as wide as the frame, panned across
    _, xx = np.mgrid[0:height, 0:2 * width]
    stripes = ((xx // max(8, width // 12)) % 2).astype(np.int16) * 18
    grain = rng.integers(-12, 12, size=(height, 2 * width), dtype=np.int16)
    pitch = np.stack([40 + stripes + grain, 120 + stripes + grain, 40 + grain], -1).clip(0, 255).astype(np.uint8)
    players = rng.uniform(0, 1, size=(22, 4))  # x, y, vx, vy
    size = max(4, height // 40)

    def frames():
        for i in range(max(1, int(round(seconds * fps)))):
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

    return encode_h264(path, frames(), fps, width, height,
                       {"preset": preset, "g": str(gop or 2 * fps), "bf": "2"})


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--fps", type=int, default=50)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--preset", default="veryfast")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    write_broadcast_like(args.out, args.seconds, args.fps, args.width, args.height, preset=args.preset)
    print(f"{args.out}: {args.width}x{args.height} {args.fps} fps {args.seconds:g} s in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
