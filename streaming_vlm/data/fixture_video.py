"""Small real H.264 files and commentary rows for tests and benchmarks (PyAV, libx264, yuv420p).

Frame i is a flat grey of level `frame_level(i)` with a moving white bar, so decoded frames can be traced back to
their native index (and so to their absolute time) after compression.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def frame_level(i: int) -> int:
    return (i * 3) % 240


def write_video(path: str | os.PathLike, seconds: float, fps: int = 24, width: int = 160, height: int = 96,
                crf: int = 23) -> Path:
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": str(crf)}
        bar = max(2, width // 20)
        for i in range(int(round(seconds * fps))):
            img = np.full((height, width, 3), frame_level(i), np.uint8)
            x = (i * 2) % max(1, width - bar)
            img[:, x:x + bar] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


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
