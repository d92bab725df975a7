"""Live sources (streaming_vlm/inference/live_source.py) with real streams on loopback, made with PyAV.

- HLS from a local HTTP server while its segments are still being written: the source's seconds are the
  segments' seconds (each second has its own colour), and the CLI streams it to the end, cues at those seconds.
- `cat game.ts | python -m streaming_vlm.inference.inference --video_path -`: the whole file arrives at once,
  faster than the engine: the oldest seconds are skipped, counted in JSON events, and the progress line shows lag.
- A pipe slower than real time: each cue is out before more than the next second was written, nothing is
  skipped, and when the pipe stalls the run ends cleanly with every second written.
- Fragmented MP4 on stdin (fd 0 of this process, fed by a thread). A URL that cannot be opened and an unknown scheme give one line and exit 2.
- `close()` stops the reader thread while stdin stays open and silent; a gap in a live stream gives empty seconds.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import webvtt

from streaming_vlm.inference.inference import main
from streaming_vlm.inference.live_source import LiveFrameSource

sys.path.insert(0, str(Path(__file__).parent))
from live_streams import HlsWriter, colour, stream_bytes  # noqa: E402

FAST = ["--max_new_tokens", "2", "--seed", "0", "--device", "cpu", "--window_size", "4"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
CLI = [sys.executable, "-m", "streaming_vlm.inference.inference"]


class _Playlists(SimpleHTTPRequestHandler):
    """Serves the folder quietly; sets `opened` at the first playlist request."""

    opened: threading.Event

    def do_GET(self):
        if self.path.endswith(".m3u8"):
            self.opened.set()
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def hls(tmp_path):
    """(HlsWriter, playlist URL, an Event set when a reader first asks for the playlist), on loopback."""
    folder = tmp_path / "hls"
    folder.mkdir()
    opened = threading.Event()
    handler = type("Handler", (_Playlists,), {"opened": opened})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    writer = HlsWriter(folder)
    yield writer, f"http://127.0.0.1:{server.server_port}/{writer.playlist.name}", opened
    server.shutdown()
    server.server_close()


def _events(path: Path) -> list[dict]:
    """The JSON lines written so far: `<path>.partial` while the run streams, `path` once it has ended."""
    path = path if path.exists() else path.with_name(path.name + ".partial")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _covered(events: list[dict]) -> list[tuple[float, float, str]]:
    """(start, end, kind) of every segment and skipped run, in file order."""
    return [(e["start"], e["end"], e["type"]) for e in events if e["type"] in ("segment", "skipped")]


def _assert_tiles(events: list[dict], seconds: int) -> None:
    """Segments and skipped runs cover [0, seconds) exactly, in order, each segment one whole second."""
    spans = _covered(events)
    assert spans and spans[0][0] == 0.0 and spans[-1][1] == float(seconds), spans
    for (_, end, _), (start, _, _) in zip(spans, spans[1:]):
        assert start == end, spans
    assert all(e - s == 1.0 for s, e, kind in spans if kind == "segment"), spans


def _matches(second, k: int) -> bool:
    return bool(np.abs(second.frames.reshape(-1, 3).mean(0) - colour(k)).max() < 12)


def test_hls_source_seconds_are_the_segments_seconds(hls):
    writer, url, _ = hls
    writer.write_second()
    writer.write_second()  # segment 0 is published once second 1 starts

    def feed():
        for _ in range(5):
            time.sleep(0.5)
            writer.write_second()
        writer.close()

    source = LiveFrameSource(url, fps=2, max_lag=10, stall_timeout=10)
    feeder = threading.Thread(target=feed)
    feeder.start()
    seconds = list(source)
    feeder.join()
    assert [s.start for s in seconds] == [float(k) for k in range(7)]
    assert all(_matches(s, int(s.start)) for s in seconds), [s.frames.reshape(-1, 3).mean(0) for s in seconds]
    assert all(list(s.frame_times) == [s.start, s.start + 0.5] for s in seconds)
    assert source.end_reason == "ended" and source.skipped_seconds == 0


def test_fragmented_mp4_on_stdin():
    chunks = stream_bytes(4, fmt="mp4")
    read_end, write_end = os.pipe()
    saved = os.dup(0)
    os.dup2(read_end, 0)
    os.close(read_end)

    def feed():
        for chunk in chunks:
            os.write(write_end, chunk)
            time.sleep(0.2)
        os.close(write_end)

    feeder = threading.Thread(target=feed)
    try:
        feeder.start()
        source = LiveFrameSource("-", fps=2, max_lag=10, stall_timeout=10)
        seconds = list(source)
    finally:
        feeder.join()
        os.dup2(saved, 0)
        os.close(saved)
    assert [s.start for s in seconds] == [0.0, 1.0, 2.0, 3.0] and source.end_reason == "ended"
    assert all(_matches(s, int(s.start)) for s in seconds)


def test_close_stops_the_reader_while_stdin_stays_open():
    """`close()` ends the reader thread while the pipe stays open and silent: no thread is left inside FFmpeg when
    the process exits (the CLI exits normally after a stall)."""
    chunks = stream_bytes(3)
    read_end, write_end = os.pipe()
    saved = os.dup(0)
    os.dup2(read_end, 0)
    os.close(read_end)
    feeder = threading.Thread(target=lambda: [os.write(write_end, chunk) for chunk in chunks])
    try:
        feeder.start()
        source = LiveFrameSource("-", fps=2, max_lag=10, stall_timeout=60)
        first = next(iter(source))
        feeder.join()
        started = time.monotonic()
        stopped = source.close()
        assert stopped and time.monotonic() - started < 5 and not source.reader.is_alive()
    finally:
        feeder.join()
        os.close(write_end)
        os.dup2(saved, 0)
        os.close(saved)
    assert first.start == 0.0 and _matches(first, 0) and source.end_reason == "closed"


def test_a_gap_in_a_live_stream_gives_empty_seconds_not_copies():
    """The live rule takes the frame after a gap once, and the gap's seconds come out empty (the source reports them
    as "gap" runs); the file rule takes it for every tick it is the first frame after, as decord does."""
    import av

    from streaming_vlm.data.video import Ticks
    from streaming_vlm.inference.frames import sampled_seconds

    frames = [(t, t, av.VideoFrame.from_ndarray(np.full((8, 8, 3), int(t * 10), np.uint8), format="rgb24"))
              for t in (0.0, 0.5, 3.0, 3.5)]
    live = [(s.start, len(s.frames)) for s in sampled_seconds(frames, Ticks(2), repeat=False)]
    assert live == [(0.0, 2), (1.0, 0), (2.0, 0), (3.0, 2)]
    assert [(s.start, len(s.frames)) for s in sampled_seconds(frames, Ticks(2))] == [(0.0, 2), (1.0, 0), (2.0, 0),
                                                                                     (3.0, 6)]


def test_cli_reads_hls_while_segments_arrive(tiny_ckpt, hls, tmp_path):
    writer, url, opened = hls
    out = tmp_path / "out.jsonl"
    writer.write_second()
    writer.write_second()
    proc = subprocess.Popen([*CLI, "--model_path", tiny_ckpt, "--video_path", url, "--emit_json", out,
                             "--output_path", tmp_path / "out.vtt", "--no_progress", *FAST],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        # joined with one segment listed, the stream's second k is segment k
        assert opened.wait(120), proc.stderr.read() if proc.poll() is not None else "no playlist request"
        deadline = time.monotonic() + 120
        while not any(e["type"] == "segment" for e in _events(out)):  # a second each second until a cue is out
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else ""
            time.sleep(1.0)
            writer.write_second()
        first_cue_at = writer.seconds
        for _ in range(4):  # these segments are written while the CLI is already streaming
            time.sleep(1.0)
            writer.write_second()
        writer.close()
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    events = _events(out)
    _assert_tiles(events, writer.seconds)
    late = [e for e in events if e["type"] == "segment" and e["start"] >= first_cue_at]
    assert len(late) >= 2, events  # cues for the segments written after the first cue
    cues = webvtt.read(str(tmp_path / "out.vtt"))
    assert [(c.start_in_seconds, c.end_in_seconds) for c in cues] == [
        (e["start"], e["end"]) for e in events if e["type"] == "segment"]


def test_cli_pipe_faster_than_the_engine_skips_oldest(tiny_ckpt, tmp_path):
    game = tmp_path / "game.ts"
    game.write_bytes(b"".join(stream_bytes(6)))
    out = tmp_path / "out.jsonl"
    cmd = " ".join(map(str, [*CLI, "--model_path", tiny_ckpt, "--video_path", "-", "--emit_json", out,
                             "--max_lag", "2", *FAST]))
    proc = subprocess.run(["bash", "-c", f"cat {game} | {cmd}"], capture_output=True, text=True, env=ENV,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr
    events = _events(out)
    _assert_tiles(events, 6)
    skipped = [e for e in events if e["type"] == "skipped"]
    segments = [e for e in events if e["type"] == "segment"]
    # all six seconds arrive while the model loads: only the newest max_lag seconds wait for it
    assert skipped and {e["reason"] for e in skipped} == {"behind"}
    assert sum(e["end"] - e["start"] for e in skipped) == 6 - len(segments) >= 1
    assert segments[-1]["start"] == 5.0
    assert "lag=" in proc.stderr and "skipped=" in proc.stderr  # the progress line


def test_cli_pipe_slower_than_real_time_then_stall(tiny_ckpt, tmp_path):
    chunks = stream_bytes(5)
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen([*CLI, "--model_path", tiny_ckpt, "--video_path", "-", "--emit_json", out,
                             "--output_path", tmp_path / "out.vtt", "--stall_timeout", "3", "--no_progress", *FAST],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    try:
        written = 0
        for k in range(5):
            # second k's cue must be out once second k+1 is written: the engine waits for nothing later
            while written < min(k + 2, 5):
                proc.stdin.write(chunks[written])
                proc.stdin.flush()
                written += 1
            deadline = time.monotonic() + (120 if k == 0 else 60)  # a busy shared machine
            while not any(e["type"] == "segment" and e["start"] == k for e in _events(out)):
                assert time.monotonic() < deadline and proc.poll() is None, f"no cue for second {k}"
                time.sleep(0.1)
            time.sleep(1.2)  # slower than real time
        # the pipe stays open but silent: a stall, which ends the run cleanly
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    err = err.decode()
    assert proc.returncode == 0, err
    assert "live source stalled" in err and "complete to second 5" in err
    events = _events(out)
    assert [(e["type"], e["start"]) for e in events] == [("segment", float(k)) for k in range(5)]
    assert len(webvtt.read(str(tmp_path / "out.vtt"))) == 5


@pytest.mark.parametrize("url,needle", [("http://127.0.0.1:9/live.m3u8", "cannot open live source"),
                                        ("ftp://example.org/x.ts", "unsupported URL scheme")])
def test_unopenable_source_one_line(tiny_ckpt, tmp_path, capsys, url, needle):
    with pytest.raises(SystemExit) as exit_:
        main(["--model_path", str(tiny_ckpt), "--video_path", url, "--output_path", str(tmp_path / "o.vtt"),
              "--no_progress", "--device", "cpu"])
    assert exit_.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "Setting accelerator" not in ln]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in lines[0], lines
