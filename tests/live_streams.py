"""Live-stream fixtures for the tests, made with PyAV (no ffmpeg binary): MPEG-TS / fragmented-MP4 bytes cut per
second, and an HLS playlist whose one-second segments are written while a reader follows it.

Every frame of stream second k is one solid colour, `colour(k)`, so a reader's seconds can be matched to the
seconds written.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

FPS = 10
WIDTH, HEIGHT = 64, 48


def colour(second: int) -> np.ndarray:
    return np.array([(40 * second) % 200 + 30, (90 * second) % 200 + 30, 200 - (30 * second) % 170], np.uint8)


def _frames(second: int):
    import av

    image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    image[:] = colour(second)
    for i in range(FPS):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = second * FPS + i
        yield frame


def _video_stream(container):
    from fractions import Fraction

    stream = container.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    stream.time_base = Fraction(1, FPS)
    # a keyframe every second (HLS cuts segments there) and no encoder delay (each second's bytes leave with it)
    stream.codec_context.gop_size = FPS
    stream.options = {"tune": "zerolatency", "x264-params": f"keyint={FPS}:min-keyint={FPS}:scenecut=0"}
    return stream


def stream_bytes(seconds: int, fmt: str = "mpegts") -> list[bytes]:
    """`seconds` seconds as a byte stream in `fmt` (mpegts, or mp4 as fragmented MP4), cut into one chunk per
    second: chunk k is what the muxer had written once second k was encoded (the last one holds the trailer)."""
    import av

    sink = io.BytesIO()
    options = {"movflags": "frag_keyframe+empty_moov+default_base_moof"} if fmt == "mp4" else {}
    container = av.open(sink, "w", format=fmt, options=options)
    stream = _video_stream(container)
    cuts = []
    for k in range(seconds):
        for frame in _frames(k):
            for packet in stream.encode(frame):
                container.mux(packet)
        cuts.append(sink.tell())
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    data = sink.getvalue()
    cuts[-1] = len(data)
    return [data[a:b] for a, b in zip([0] + cuts[:-1], cuts)]


class HlsWriter:
    """An HLS playlist (`live.m3u8`) in `folder`, one-second MPEG-TS segments, written a second at a time;
    `close()` ends the playlist (#EXT-X-ENDLIST)."""

    def __init__(self, folder: Path):
        import av

        self.folder = Path(folder)
        self.playlist = self.folder / "live.m3u8"
        self.container = av.open(str(self.playlist), "w", format="hls",
                                 options={"hls_time": "1", "hls_list_size": "0", "hls_flags": "temp_file",
                                          "hls_segment_filename": str(self.folder / "seg%03d.ts")})
        self.stream = _video_stream(self.container)
        self.seconds = 0

    def write_second(self) -> int:
        for frame in _frames(self.seconds):
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
        self.seconds += 1
        return self.seconds - 1

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
