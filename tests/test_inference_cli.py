"""The CLI and Python API end to end, with the tiny checkpoint and real mp4s decoded by decord.

- WebVTT parses with webvtt-py, one cue per second, monotonic, tiling the stream; JSON lines parse and agree.
- A video shorter than one second still gives a valid VTT.
- `--interactive` through a pipe: the answer is printed and written.
- `--fps 4`: two temporal patches per second with absolute timestamps; the card's Python API with a preset.
- Every bad input: non-zero exit, one line on stderr, no traceback (in-process: same `main`, same `cli_entry`, minus
  ~10 s of imports per case on a shared CPU; the CLI's exit code 2 as a real process is in test_bad_inputs.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
import webvtt

from streaming_vlm.inference.inference import main, streaming_inference
from tests.fixture_video import write_video

FAST = ["--max_new_tokens", "3", "--max_answer_tokens", "4", "--seed", "0", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(4096))
    empty = root / "empty.mp4"
    empty.write_bytes(b"")
    return {"game": write_video(root / "game.mp4", seconds=3, fps=24),
            "short": write_video(root / "short.mp4", seconds=0.5, fps=24),
            "corrupt": corrupt, "empty": empty}


def _cli(args, stdin=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "streaming_vlm.inference.inference", *map(str, args)],
                          input=stdin, capture_output=True, text=True, env=ENV, timeout=timeout)


def _stderr_lines(text):
    # deepspeed, when some import pulls it in, announces "[WARNING] ... Setting accelerator to CPU"
    return [ln for ln in text.splitlines() if ln.strip() and "Setting accelerator" not in ln]


@pytest.fixture(scope="module")
def game_run(tiny_ckpt, videos, tmp_path_factory):
    """One CLI run on the 3 s mp4, VTT and JSON lines, progress on, timed from outside: (process, vtt, wall s)."""
    vtt = tmp_path_factory.mktemp("game") / "out.vtt"
    began = time.perf_counter()
    proc = _cli(["--model_path", tiny_ckpt, "--video_path", videos["game"], "--output_path", vtt, "--emit_json",
                 *FAST])
    return proc, vtt, time.perf_counter() - began


def test_vtt_and_json_lines(game_run):
    proc, vtt, _ = game_run
    assert proc.returncode == 0, proc.stderr
    assert "timing:" in proc.stderr and "decode" in proc.stderr and "eviction" in proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]  # stdout is pure JSON lines
    assert [(r["type"], r["start"], r["end"]) for r in records] == [("segment", float(i), float(i + 1))
                                                                    for i in range(3)]
    assert vtt.read_text().startswith("WEBVTT\n\n")
    cues = webvtt.read(str(vtt))
    assert [(c.start_in_seconds, c.end_in_seconds) for c in cues] == [(0, 1), (1, 2), (2, 3)]
    for cue, record in zip(cues, records):
        assert cue.text.strip()
        if record["text"]:
            assert cue.text.split()[0][:3] == record["text"].replace("&", "&amp;").split()[0][:3]


def test_startup_line_splits_start_up(game_run):
    """One `start-up T s: phase t s, ...` line on stderr: every part >= 0, the phases add up to T (to rounding),
    T fits in the process's wall time, and engine start's parts (in brackets) in engine start."""
    proc, _, wall = game_run
    assert proc.returncode == 0, proc.stderr
    lines = [ln[ln.index("start-up "):] for ln in re.split(r"[\r\n]", proc.stderr) if "start-up " in ln]
    assert len(lines) == 1, proc.stderr
    total = float(re.match(r"start-up (-?[\d.]+) s: ", lines[0]).group(1))

    def seconds(text):
        return {name.strip(): float(value) for name, value in re.findall(r"([a-z+\- ]+) (-?[\d.]+) s", text)}

    phases = seconds(re.sub(r" \(.*\)", "", lines[0].split(": ", 1)[1]))
    parts = seconds(re.search(r"\((.*)\)", lines[0]).group(1))
    assert list(phases) == ["imports", "source", "processor", "model", "engine init", "engine start", "first second"]
    assert list(parts) == ["plan set-up", "decoder prepare", "prefix prefill", "other"]  # CPU: nothing compiled
    assert min([total, *phases.values(), *parts.values()]) >= 0
    assert abs(sum(phases.values()) - total) <= 0.005 * len(phases) and total <= wall
    assert sum(parts.values()) <= phases["engine start"] + 0.005 * len(parts)


def test_video_shorter_than_one_second(tiny_ckpt, videos, tmp_path):
    vtt = tmp_path / "short.vtt"
    code = _run_main(["--model_path", tiny_ckpt, "--video_path", videos["short"], "--output_path", vtt,
                      "--no_progress", *FAST])
    assert code == 0
    cues = webvtt.read(str(vtt))
    assert len(cues) == 1 and (cues[0].start, cues[0].end) == ("00:00:00.000", "00:00:00.500")  # clipped to the video


def test_interactive_through_a_pipe(tiny_ckpt, videos, tmp_path):
    vtt = tmp_path / "qa.vtt"
    proc = _cli(["--model_path", tiny_ckpt, "--video_path", videos["game"], "--output_path", vtt,
                 "--interactive", "--no_progress", *FAST], stdin="Who is winning?\n")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "Q: Who is winning?" in lines
    assert lines[lines.index("Q: Who is winning?") + 1].startswith("A: ")
    cues = webvtt.read(str(vtt))
    qa = [c for c in cues if c.text.startswith("Q: Who is winning?")]
    assert len(qa) == 1 and "\nA: " in qa[0].text
    starts = [c.start_in_seconds for c in cues]
    assert starts == sorted(starts) and len(cues) == 4  # 3 seconds + the answer


def test_fps4_two_patches_per_second_and_preset_api(tiny_ckpt, videos):
    from streaming_vlm.cuda_config import get_cuda_config

    config = get_cuda_config(model_size="2b", video_path=str(videos["game"]), model_path=str(tiny_ckpt),
                             attn_implementation="sdpa", device="cpu", max_new_tokens=2, progress=False, seed=0)
    assert config["fps"] == 4 and config["window_size"] == 24
    seen = []
    results = streaming_inference(config, on_segment=seen.append)
    assert [(s["start"], s["end"]) for s in results["segments"]] == [(0, 1), (1, 2), (2, 3)]
    assert seen == results["segments"]
    assert results["fps_processed"] > 0 and results["rtf"] > 0 and results["stream_seconds"] == 3
    assert set(results["timings"]) >= {"vision", "prefill", "decode", "eviction", "read", "preprocess"}
    assert results["timings"]["vision"] > 0 and results["timings"]["decode"] > 0


def test_fps4_user_turn_carries_two_absolute_stamps(tiny_ckpt, tiny_processor, videos):
    from streaming_vlm.inference.engine import StreamingEngine
    from streaming_vlm.inference.frames import VideoFrameSource
    from streaming_vlm.model.loading import load_model

    engine = StreamingEngine(load_model(tiny_ckpt), tiny_processor, {"fps": 4, "max_new_tokens": 1, "seed": 0})
    engine.start()
    for second in VideoFrameSource(videos["game"], fps=4, start=1, end=2):
        assert len(second.frames) == 4 and second.frame_times[0] == 1.0
        engine.step(second)
    user = [s for s in engine.cache.segments if s.kind == "user"]
    assert len(user) == 1
    text = tiny_processor.tokenizer.decode(user[0].ids)
    assert "Time=1.0-2.0s" in text and "<1.1 seconds>" in text and "<1.6 seconds>" in text
    assert text.count("<|video_pad|>") > 0 and text.count("seconds>") == 2


def _run_main(argv):
    try:
        main([str(a) for a in argv])
    except SystemExit as exit_:
        return exit_.code
    return 0


@pytest.mark.parametrize("case,needle", [
    ("missing", "video not found"),
    ("corrupt", "cannot decode video"),
    ("empty", "video is empty"),
    ("attn", "unknown attn_implementation"),
    ("flash", "flash-attn"),
    ("model", "model path not found"),
    ("not_a_model", "not a model checkpoint"),
    ("fps0", "fps must be > 0"),
    ("fps_negative", "fps must be > 0"),
    ("window", "more than max_cache_tokens"),
    ("budget", "more than max_cache_tokens"),
    ("pos_mode", "pos_mode must be one of"),
])
def test_bad_input_is_one_line(case, needle, tiny_ckpt, videos, tmp_path, capsys):
    if case == "flash":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is not None:
            pytest.skip("flash-attn is installed here")
    args = {"--model_path": tiny_ckpt, "--video_path": videos["game"], "--output_path": tmp_path / "x.vtt"}
    extra = []
    if case in ("missing", "corrupt", "empty"):
        args["--video_path"] = videos.get(case, tmp_path / "nope.mp4")
    elif case == "attn":
        extra = ["--attn_implementation", "flash_attention_3"]
    elif case == "flash":
        extra = ["--attn_implementation", "flash_attention_2"]
    elif case == "model":
        args["--model_path"] = tmp_path / "no_such_model"
    elif case == "not_a_model":
        args["--model_path"] = tmp_path
    elif case == "fps0":
        extra = ["--fps", "0"]
    elif case == "fps_negative":
        extra = ["--fps=-2"]
    elif case == "window":
        extra = ["--window_size", "100000"]
    elif case == "budget":
        extra = ["--window_size", "16", "--max_cache_tokens", "1500"]
    elif case == "pos_mode":
        extra = ["--pos_mode", "rope"]
    argv = [x for kv in args.items() for x in kv] + extra + ["--no_progress"]
    code = _run_main(argv)
    err = capsys.readouterr().err
    lines = _stderr_lines(err)
    assert code not in (0, None)
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "x.vtt").exists()  # nothing written for bad input


def test_run_stream_is_the_eval_entry_point(tiny_ckpt, tiny_processor, videos):
    from streaming_vlm.inference import run_stream
    from streaming_vlm.model.loading import load_model

    model = load_model(tiny_ckpt)
    config = {"max_new_tokens": 3, "seed": 7}
    first = run_stream(model, tiny_processor, videos["game"], config)
    again = run_stream(model, tiny_processor, videos["game"], config)
    other = run_stream(model, tiny_processor, videos["game"], {**config, "seed": 8})
    part = run_stream(model, tiny_processor, videos["game"], {"max_new_tokens": 3, "temperature": 0}, start=1, end=3)
    assert [(s["start"], s["end"]) for s in first] == [(0, 1), (1, 2), (2, 3)]
    assert [s["text"] for s in first] == [s["text"] for s in again]  # seeded sampling is reproducible
    assert [s["text"] for s in first] != [s["text"] for s in other]
    assert [(s["start"], s["end"]) for s in part] == [(1, 2), (2, 3)]
    assert all(s["tokens"] <= 3 + 2 for s in first)  # max_new_tokens words + <|im_end|> + "\n"
