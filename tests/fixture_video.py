"""Test fixtures: small real H.264 mp4 files (PyAV, libx264, yuv420p) and LiveCC/StreamingVLM commentary rows.

The package's own video writer (data/synth/render.py) renders the synthetic football games; these files are
plain moving shapes for tests and benchmarks (bench/ imports this module with the repository root on sys.path).
Content changes every frame (a bar sweeps, colours drift), so consecutive seconds have different pixels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def encode_h264(path, frames, fps: int, width: int, height: int, options: dict | None = None) -> Path:
    """Write (height, width, 3) uint8 RGB `frames` as an H.264 mp4 (libx264 `options`, e.g. preset, crf)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = dict(options or {})
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_video(path, seconds: float, fps: int = 24, width: int = 160, height: int = 96, seed: int = 0,
                options: dict | None = None) -> Path:
    """`seconds` of moving shapes at `fps` (at least one frame); `options` go to libx264 (default: its own)."""
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

    return encode_h264(path, frames(), fps, width, height, options)


# Long fixture videos whose pixels no test looks at: 3-4x faster to encode than libx264's defaults.
FAST = {"preset": "ultrafast"}


def timed_words(start: float, end: float, every: float = 0.4, prefix: str = "w") -> list[list]:
    """Words `{prefix}{k}` of `every` seconds each, ending at start+every, start+2*every, ... <= end."""
    out, k = [], 0
    t = start
    while t + every <= end + 1e-9:
        out.append([round(t, 3), round(t + every, 3), f"{prefix}{k}"])
        t += every
        k += 1
    return out


def conversation(video: str, start: float, end: float, words: list, previous: str = "", title: str = "") -> list:
    """A LiveCC/StreamingVLM conversation row."""
    return [
        {"role": "user", "content": [
            {"type": "video", "video": video, "video_start": start, "video_end": end},
            {"type": "text", "text": "", "previous": previous, "title": title}]},
        {"role": "assistant", "content": [{"type": "text_stream", "text_stream": words}]},
    ]


def write_jsonl_with_seeks(path: str | os.PathLike, rows: list, sidecar: bool = True,
                           raw_lines: dict[int, bytes] | None = None) -> Path:
    """Write rows as JSONL plus byte offsets (a `_seeks.jsonl` sidecar, or LiveCC-style on the last line).

    `raw_lines` replaces row i's bytes (for malformed / non-UTF-8 fixtures)."""
    path = Path(path)
    offsets, pos = [], 0
    with open(path, "wb") as f:
        for i, row in enumerate(rows):
            line = (raw_lines or {}).get(i)
            if line is None:
                line = json.dumps(row, ensure_ascii=False).encode("utf-8")
            line = line.rstrip(b"\n") + b"\n"
            offsets.append(pos)
            f.write(line)
            pos += len(line)
        if not sidecar:
            f.write(json.dumps(offsets).encode() + b"\n")
    if sidecar:
        from streaming_vlm.data.sources import seeks_sidecar

        seeks_sidecar(path).write_text(json.dumps(offsets) + "\n")
    return path
