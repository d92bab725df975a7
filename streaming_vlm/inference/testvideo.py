"""A real H.264 mp4 of moving shapes, written with PyAV: for tests, smoke runs and the latency benchmark.

Decoded by decord like any camera file. Content changes every frame (a bar sweeps, colours drift), so consecutive
seconds have different pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_video(path, seconds: float, fps: int = 24, width: int = 160, height: int = 96, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)

    def frames():
        for i in range(max(1, int(round(seconds * fps)))):
            frame = np.empty((height, width, 3), np.uint8)
            frame[:] = (base + i * np.array([3, 5, 7])) % 256
            x = (i * 4) % width
            frame[:, x:x + max(2, width // 16)] = 255
            y = (i * 2) % height
            frame[y:y + max(2, height // 12), :, 1] = 0
            yield frame

    return encode_h264(path, frames(), fps, width, height)


def encode_h264(path, frames, fps: int, width: int, height: int, options: dict | None = None) -> Path:
    """Write (height, width, 3) uint8 RGB `frames` as an H.264 mp4 with PyAV (libx264 `options`, e.g. preset)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = dict(options or {})
    for frame in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path
