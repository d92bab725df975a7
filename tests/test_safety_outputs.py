"""Lose nothing (issue 17): the CLI's output contract, the tiny factory never touching a user's folder, a stale
seeks sidecar, non-UTF-8 questions, and a bad-sample fraction that is clearly over the limit.

Output contract (streaming_vlm/output_files.py): outputs are checked before the model loads; while streaming, cues
go to `<output>.partial`, flushed per cue; a clean end (end of video, SIGTERM) renames it onto `<output>`; a failed
run keeps `.partial` and never replaces an existing `<output>`; a start past the end of the video is an error.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import webvtt

from streaming_vlm.errors import UserError
from streaming_vlm.inference.inference import main, stdin_questions, streaming_inference
from tests.fixture_video import write_video

FAST = {"max_new_tokens": 2, "max_answer_tokens": 3, "seed": 0, "device": "cpu", "progress": False}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
OLD_VTT = "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nan older, complete commentary\n\n"


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "game.mp4", seconds=3, fps=8, width=64, height=64)


@pytest.fixture(scope="module")
def loaded(tiny_ckpt, tiny_processor):
    from streaming_vlm.model.loading import load_model

    return load_model(tiny_ckpt), tiny_processor


def _main(argv, capsys):
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    return code, [ln for ln in err.splitlines() if ln.strip()], err


def test_output_equal_to_the_input_video_is_refused_and_the_video_kept(tiny_ckpt, video, tmp_path, capsys):
    copy = shutil.copy(video, tmp_path / "match.mp4")
    before = open(copy, "rb").read()
    code, lines, err = _main(["--model_path", tiny_ckpt, "--video_path", copy, "--output_path", copy], capsys)
    assert code == 2 and len(lines) == 1 and "is also an input" in lines[0] and "Traceback" not in err
    assert open(copy, "rb").read() == before


@pytest.mark.parametrize("case,needle", [
    ("emit_json_missing_dir", "emit_json folder does not exist"),
    ("output_missing_dir", "output_path folder does not exist"),
    ("same_outputs", "are the same file"),
    ("output_is_dir", "is a folder"),
    ("start_past_end", "past the end of the video"),
])
def test_bad_outputs_and_start_fail_before_loading_and_leave_the_old_output(case, needle, tiny_ckpt, video,
                                                                             tmp_path, capsys):
    vtt = tmp_path / "old.vtt"
    vtt.write_text(OLD_VTT)
    argv = ["--model_path", tiny_ckpt, "--video_path", video, "--output_path", vtt]
    argv += {"emit_json_missing_dir": ["--emit_json", tmp_path / "missing" / "x.jsonl"],
             "output_missing_dir": ["--emit_json", tmp_path / "x.jsonl", "--output_path", "/missing/dir/o.vtt"],
             "same_outputs": ["--emit_json", vtt],
             "output_is_dir": ["--output_path", tmp_path],
             "start_past_end": ["--start", "1000"]}[case]
    t0 = time.perf_counter()
    code, lines, err = _main(argv, capsys)
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err and "Loading weights" not in err  # refused before the model loads
    assert time.perf_counter() - t0 < 30
    assert vtt.read_text() == OLD_VTT
    assert not list(tmp_path.glob("*.partial")) and not (tmp_path / "x.jsonl").exists()


def test_cues_stream_to_partial_then_replace_the_output_at_the_end(loaded, video, tmp_path):
    model, processor = loaded
    vtt, jsonl = tmp_path / "out.vtt", tmp_path / "out.jsonl"
    vtt.write_text(OLD_VTT)
    seen = []

    def during(segment):  # what `tail -f out.vtt.partial` shows after each cue; the old output is still whole
        seen.append((len(webvtt.from_buffer(io.StringIO((tmp_path / "out.vtt.partial").read_text()))),
                     vtt.read_text() == OLD_VTT,
                     len((tmp_path / "out.jsonl.partial").read_text().splitlines())))

    streaming_inference({**FAST, "video_path": str(video), "output_path": str(vtt), "emit_json": str(jsonl)},
                        model=model, processor=processor, on_segment=during)
    assert seen == [(1, True, 1), (2, True, 2), (3, True, 3)]
    assert not list(tmp_path.glob("*.partial"))
    assert len(webvtt.read(str(vtt))) == 3 and len(jsonl.read_text().splitlines()) == 3


def test_a_run_failing_mid_stream_keeps_partial_and_never_replaces_the_output(loaded, video, tmp_path, capsys):
    model, processor = loaded
    vtt = tmp_path / "out.vtt"
    vtt.write_text(OLD_VTT)

    def fail_on_second(segment):
        if segment["start"] >= 1:
            raise RuntimeError("decode failed")

    with pytest.raises(RuntimeError, match="decode failed"):
        streaming_inference({**FAST, "video_path": str(video), "output_path": str(vtt)},
                            model=model, processor=processor, on_segment=fail_on_second)
    assert vtt.read_text() == OLD_VTT
    partial = tmp_path / "out.vtt.partial"
    assert len(webvtt.from_buffer(io.StringIO(partial.read_text()))) == 2  # what was made: kept, valid
    assert "kept in" in capsys.readouterr().err


def test_a_non_utf8_question_is_reported_and_the_stream_goes_on(loaded, video, tmp_path, capsys):
    model, processor = loaded
    questions = stdin_questions(io.BytesIO(b"\xff\xfe broken\nWho is winning?\n"))
    time.sleep(0.2)  # the pump thread reads both lines before the stream starts
    result = streaming_inference({**FAST, "video_path": str(video), "output_path": str(tmp_path / "qa.vtt"),
                                  "interactive": True}, model=model, processor=processor, questions=questions)
    err = capsys.readouterr().err
    assert "stdin line 1 is not UTF-8" in err
    assert [a["question"] for a in result["answers"]] == ["Who is winning?"]
    assert len(result["segments"]) == 3
    assert "Q: Who is winning?" in (tmp_path / "qa.vtt").read_text()


def test_sigterm_is_a_clean_end_the_output_is_published(tiny_ckpt, tmp_path):
    long_video = write_video(tmp_path / "long.mp4", seconds=40, fps=4, width=64, height=64)
    vtt = tmp_path / "live.vtt"
    vtt.write_text(OLD_VTT)
    partial = tmp_path / "live.vtt.partial"
    proc = subprocess.Popen([sys.executable, "-m", "streaming_vlm.inference.inference", "--model_path", str(tiny_ckpt),
                             "--video_path", str(long_video), "--output_path", str(vtt), "--max_new_tokens", "2",
                             "--device", "cpu", "--no_progress"], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if partial.exists() and partial.read_text().count(" --> ") >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    assert vtt.read_text() == OLD_VTT  # mid-stream: the old output untouched, the new one in .partial
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err
    cues = webvtt.read(str(vtt))
    assert 2 <= len(cues) < 40 and not partial.exists()


def test_the_tiny_factory_never_deletes_a_users_folder(tiny_ckpt, tmp_path):
    from streaming_vlm.model.tiny import FACTORY_MARKER, build_checkpoint
    from streaming_vlm.training.model import ensure_tiny_checkpoint

    user = tmp_path / "my_model"
    user.mkdir()
    (user / "NOTES.txt").write_text("three weeks of notes")
    with pytest.raises(UserError, match="left alone"):
        ensure_tiny_checkpoint(str(user), "tiny")
    with pytest.raises(UserError, match="left alone"):
        build_checkpoint(user)
    assert sorted(p.name for p in user.iterdir()) == ["NOTES.txt"]
    assert (user / "NOTES.txt").read_text() == "three weeks of notes"
    # a checkpoint this factory built (its marker) and that lost its weights is rebuilt
    ours = tmp_path / "ours"
    shutil.copytree(tiny_ckpt, ours)
    assert (ours / FACTORY_MARKER).is_file()
    (ours / "model.safetensors").unlink()
    ensure_tiny_checkpoint(str(ours), "tiny")
    assert (ours / "model.safetensors").is_file() and (ours / "config.json").is_file()


def test_a_stale_seeks_sidecar_is_rescanned_said_and_its_rows_counted(tmp_path, caplog):
    from streaming_vlm.data.bad_samples import MALFORMED_JSON, BadSample
    from tests.fixture_video import conversation, timed_words, write_jsonl_with_seeks
    from streaming_vlm.data.sources import JsonlSource

    rows = [conversation("v.mp4", 0.0, 4.0, timed_words(0, 4, 0.5)) for _ in range(8)]
    path = write_jsonl_with_seeks(tmp_path / "train_with_seeks.jsonl", rows)
    assert len(JsonlSource(path)) == 8
    with open(path, "ab") as f:  # 4 rows appended without updating the sidecar, the last one broken
        for row in rows[:3]:
            f.write(json.dumps(row).encode() + b"\n")
        f.write(b'[{"role": "user"\n')
    with caplog.at_level(logging.WARNING, logger="streaming_vlm.data.sources"):
        source = JsonlSource(path)
    assert len(source) == 12
    assert "does not match" in caplog.text and "rescanned" in caplog.text and "12 rows" in caplog.text
    assert source[10].video.endswith("v.mp4")
    with pytest.raises(BadSample) as bad:
        source[11]
    assert bad.value.reason == MALFORMED_JSON


def test_a_clearly_exceeded_bad_fraction_stops_before_min_samples():
    from streaming_vlm.data.bad_samples import BadSampleTracker

    tracker = BadSampleTracker(0.2, min_samples=50)
    seen = 0
    with pytest.raises(UserError, match="over data.max_bad_fraction=0.2"):
        for step in range(20):  # 46% bad: batches of 13 with 6 bad
            tracker.add({"corrupt_video": 6}, 13)
            seen += 13
    assert seen < 50
    early = BadSampleTracker(0.05, min_samples=50)
    early.add({"corrupt_video": 1}, 1)  # one early bad sample is no verdict yet
    early.add({}, 3)
