"""The CLI's file source (PyAV, sampled frames only, read ahead on a thread: inference/frames.py) yields exactly
the frames and timestamps training's decord reader takes, and reports a bad file in one line."""

from __future__ import annotations

import numpy as np
import pytest

from streaming_vlm.data.video import VideoReader
from streaming_vlm.errors import UserError
from streaming_vlm.inference.frames import VideoFrameSource
from tests.fixture_video import write_video
from streaming_vlm.inference.frames import ReadAhead


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("vid") / "game.mp4", seconds=5, fps=25, width=160, height=96)


@pytest.mark.parametrize("fps,start,end", [(2, 0, None), (4, 0, None), (0.5, 0, None), (3, 1.4, 3.2), (50, 2, 3)])
def test_file_source_reads_what_decord_reads(video, fps, start, end):
    want = list(VideoReader(video, fps=fps).iter_seconds(start, end))
    got = list(VideoFrameSource(video, fps, start=start, end=end))
    assert [(s.start, s.end, list(s.frame_times)) for s in got] == [(s.start, s.end, list(s.frame_times))
                                                                        for s in want]
    for a, b in zip(got, want):
        assert a.frames.dtype == np.uint8 and a.frames.shape == b.frames.shape
        assert np.array_equal(a.frames, b.frames)
    assert sum(len(s.frames) for s in got) > 0


def test_bad_files_are_one_line(tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (tmp_path / "empty.mp4").write_bytes(b"")
    for path, needle in ((corrupt, "cannot decode video"), (tmp_path / "empty.mp4", "empty"),
                         (tmp_path / "none.mp4", "not found")):
        with pytest.raises(UserError, match=needle) as err:
            VideoFrameSource(path, 2)
        assert "\n" not in str(err.value)


def test_read_ahead_keeps_order_and_raises_in_the_consumer():
    def items():
        yield from range(5)
        raise ValueError("broken at 5")

    seen = []
    with pytest.raises(ValueError, match="broken at 5"):
        for item in ReadAhead(items(), depth=2):
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]
    assert list(ReadAhead(iter(range(7)), depth=3)) == list(range(7))
