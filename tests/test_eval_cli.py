"""`python -m streaming_vlm.eval` end to end on small temp files with the offline judge, and its bad-input exits."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# reference: 3 segments of 200 words each; the model repeats the reference, the baseline talks about something else
REF_WORDS = "the keeper rolls it out and they build from the back".split()


def reference_row(video, n_segments):
    content = [
        [100 * k + i * 0.45, 100 * k + (i + 1) * 0.45, REF_WORDS[i % len(REF_WORDS)]]
        for k in range(n_segments)
        for i in range(200)
    ]
    return {"video": video, "title": "Derby", "content": content, "preasr": ""}


def per_second(video, seconds, text):
    return [{"video": video, "start": t, "end": t + 1, "text": text} for t in seconds]


def write_jsonl(path, rows, extra_lines=()):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(line + "\n" for line in extra_lines))
    return path


@pytest.fixture
def files(tmp_path):
    ref = write_jsonl(tmp_path / "ref.jsonl", [reference_row("a.mp4", 2), reference_row("b.mp4", 1)])
    good = " ".join(REF_WORDS)
    model = write_jsonl(
        tmp_path / "model.jsonl",
        per_second("a.mp4", range(0, 200, 5), good) + per_second("a.mp4", [7], " ..."),  # b.mp4: nothing -> missing
        extra_lines=['{"video": "a.mp4", "start": 3', "garbage"],
    )
    base = write_jsonl(
        tmp_path / "base.jsonl",
        [{"video": v, "content": [[t, t + 4, "fans sing in the rain tonight"] for t in range(0, 300, 4)]} for v in ("a.mp4", "b.mp4")],
    )
    return tmp_path, ref, model, base


def cli(*args, cwd=REPO):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "streaming_vlm.eval", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=120)


def judge_args(tmp, ref, model, base, *extra):
    return ["judge", "--predictions", model, "--baseline", base, "--reference", ref, "--out", tmp / "verdicts.jsonl",
            "--judge", "offline", *extra]


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_judge_then_report_with_the_offline_judge(files):
    tmp, ref, model, base = files
    result = cli(*judge_args(tmp, ref, model, base, "--report", tmp / "judge_report.json"))
    assert result.returncode == 0, result.stderr
    assert "OVERALL" in result.stdout
    assert "skipped 2 malformed line(s)" in result.stdout
    assert "missing segments: 1" in result.stdout and "b.mp4#0-100" in result.stdout

    rows = [json.loads(line) for line in (tmp / "verdicts.jsonl").read_text().splitlines()]
    run, verdicts = rows[0], rows[1:]
    assert run["record"] == "run" and run["protocol"] == "inf-streams" and run["segments"] == 3
    assert run["predictions"]["model"]["skipped_lines"] == 2
    assert len(verdicts) == 6
    by_segment = {(v["segment"], v["order"]): v for v in verdicts}
    assert by_segment[("a.mp4#0-100", "model_first")]["choice"] == "A"
    assert by_segment[("a.mp4#0-100", "model_second")]["choice"] == "B"
    assert by_segment[("b.mp4#0-100", "model_first")]["outcome"] == "missing"

    report_path = tmp / "report.json"
    result = cli("report", tmp / "verdicts.jsonl", "--json", report_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert report == json.loads((tmp / "judge_report.json").read_text())
    assert report["overall"]["votes"] == 6 and report["overall"]["model_votes"] == 4
    assert report["overall"]["win_rate_pct"] == pytest.approx(66.67)
    assert report["per_video"]["a.mp4"]["win_rate_pct"] == 100.0
    assert report["per_video"]["b.mp4"]["missing_votes"] == 2
    assert report["missing"]["model"] == ["b.mp4#0-100"]

    to_stdout = cli("report", tmp / "verdicts.jsonl", "--json", "-", "--missing", "exclude")
    assert json.loads(to_stdout.stdout)["overall"]["win_rate_pct"] == 100.0
    assert "OVERALL" in to_stdout.stderr


def test_segment_length_and_min_words_flags(files):
    tmp, ref, model, base = files
    result = cli(*judge_args(tmp, ref, model, base, "--segment-seconds", "50", "--min-words", "80"))
    assert result.returncode == 0, result.stderr
    run = json.loads((tmp / "verdicts.jsonl").read_text().splitlines()[0])
    assert run["segments"] == 6 and run["segment_seconds"] == 50 and run["min_words"] == 80


def test_livesports_rows_run_through_the_same_cli(tmp_path):
    events = [{"video_id": "yt1", "event_id": i, "begin": 10.0 * i, "end": 10.0 * i + 8, "event_title": "T",
               "preasr_text": "", "event_asr_text": "corner kick headed wide"} for i in range(3)]
    ref = write_jsonl(tmp_path / "events.jsonl", events)
    model = write_jsonl(tmp_path / "m.jsonl", [{"video": "yt1", "event_id": i, "start": 10.0 * i, "end": 10.0 * i + 8,
                                                "text": "corner kick, headed wide"} for i in range(3)])
    base = write_jsonl(tmp_path / "b.jsonl", [{"video": "yt1", "event_id": i, "start": 10.0 * i, "end": 10.0 * i + 8,
                                               "text": "what a lovely evening"} for i in range(3)])
    result = cli(*judge_args(tmp_path, ref, model, base))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (tmp_path / "verdicts.jsonl").read_text().splitlines()]
    assert rows[0]["protocol"] == "livesports" and len(rows) == 7
    assert all(r["outcome"] == "model" for r in rows[1:])


def test_bad_inputs_exit_with_one_line(files):
    tmp, ref, model, base = files
    assert_one_line_error(cli(*judge_args(tmp, ref, model, tmp / "nope.jsonl")), "baseline predictions file not found")
    assert_one_line_error(cli(*judge_args(tmp, tmp / "nope.jsonl", model, base)), "reference file not found")
    garbage = write_jsonl(tmp / "garbage.jsonl", [], extra_lines=["{nope", '{"text": "no video"}'])
    assert_one_line_error(cli(*judge_args(tmp, ref, garbage, base)), "none of its 2 lines")
    assert_one_line_error(cli(*judge_args(tmp, ref, model, base, "--min-words", "5000")), "at least 5000 words")
    assert_one_line_error(cli(*judge_args(tmp, ref, model, base, "--judge", "gpt")), "invalid choice")
    bad_ref = write_jsonl(tmp / "bad_ref.jsonl", [], extra_lines=['{"video": "a.mp4", "content": [[0, 1, "x"]]}', "{"])
    assert_one_line_error(cli(*judge_args(tmp, bad_ref, model, base)), "line 2")
    assert_one_line_error(cli("report", tmp / "missing.jsonl"), "verdicts file not found")
    broken = write_jsonl(tmp / "broken.jsonl", [{"record": "verdict", "segment": "s", "video": "v", "order": "x"}])
    assert_one_line_error(cli("report", broken), "missing field 'outcome'")
    assert not (tmp / "verdicts.jsonl").exists()


def test_missing_api_key_for_the_openai_judge(files):
    tmp, ref, model, base = files
    result = cli(*judge_args(tmp, ref, model, base, "--judge", "openai", "--api-key-env", "EVAL_CLI_NO_SUCH_KEY"))
    assert_one_line_error(result, "EVAL_CLI_NO_SUCH_KEY is not set")


def test_generate_with_the_tiny_checkpoint_then_judge_and_report(tiny_ckpt, tmp_path, capfd):
    """`generate` runs the real streaming engine (tiny checkpoint, a generated 10 s game): one row per second, the
    same rows as `run_stream` with the same settings; `judge` and `report` then consume them end to end. The model's
    rows come from the CLI as a process; the baseline's from the same CLI's main in this process."""
    from in_process import run_module  # tests/in_process.py
    from data.synthetic import generate_dataset
    from streaming_vlm.inference import run_stream
    from streaming_vlm.model.loading import load_model, load_processor

    data = tmp_path / "data"
    generate_dataset(data, train_games=0, eval_games=1, eval_duration=10, clips=0, seed=11)
    ref = data / "eval_inf.jsonl"
    (video,) = [json.loads(line)["video"] for line in ref.read_text().splitlines()]
    common = ["--reference", ref, "--video-root", data, "--model_path", tiny_ckpt,
              "--set", "temperature=0", "--set", "window_size=4", "--set", "device=cpu"]
    model_out, base_out = tmp_path / "model.jsonl", tmp_path / "baseline.jsonl"
    result = cli("generate", *common, "--out", model_out, "--set", "max_new_tokens=5")
    assert result.returncode == 0, result.stderr
    assert f"wrote 10 prediction rows for 1 videos to {model_out}" in result.stdout
    assert f"generated {video}: 10 rows" in result.stderr
    capfd.readouterr()
    assert run_module(["-m", "streaming_vlm.eval", "generate", *common, "--out", base_out, "--set",
                       "max_new_tokens=2"]) == 0, capfd.readouterr().err

    rows = [json.loads(line) for line in model_out.read_text().splitlines()]
    assert [(r["video"], r["start"], r["end"]) for r in rows] == [(video, float(t), float(t + 1)) for t in range(10)]
    assert all(isinstance(r["text"], str) for r in rows) and any(r["text"] for r in rows)
    # the same engine and settings in-process (greedy: deterministic) give the same per-second text
    model, processor = load_model(tiny_ckpt, device="cpu"), load_processor(tiny_ckpt)
    direct = run_stream(model, processor, data / video,
                        {"temperature": 0.0, "window_size": 4, "max_new_tokens": 5, "progress": False})
    assert [r["text"] for r in rows] == [s["text"] for s in direct]
    base_rows = [json.loads(line) for line in base_out.read_text().splitlines()]
    assert len(base_rows) == 10 and base_rows != rows

    verdicts = tmp_path / "verdicts.jsonl"
    result = cli("judge", "--predictions", model_out, "--baseline", base_out, "--reference", ref, "--out", verdicts,
                 "--judge", "offline", "--segment-seconds", "4", "--min-words", "3")
    assert result.returncode == 0, result.stderr
    assert "OVERALL" in result.stdout
    run, *records = [json.loads(line) for line in verdicts.read_text().splitlines()]
    assert run["segments"] >= 2 and len(records) == 2 * run["segments"]
    assert not any(r["outcome"] == "missing" for r in records)  # one row per second covers every segment
    result = cli("report", verdicts, "--json", "-")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["overall"]["votes"] == 2 * run["segments"] and report["per_video"][video]["segments"] == run["segments"]


def test_generate_without_a_model_exits_with_one_line(files):
    tmp, ref, _, _ = files
    assert_one_line_error(cli("generate", "--reference", ref, "--out", tmp / "gen.jsonl"), "--model_path")
    assert not (tmp / "gen.jsonl").exists()


def test_generate_writes_rows_the_judge_reads(tmp_path):
    from streaming_vlm.eval.generate import generate_predictions, generation_jobs
    from streaming_vlm.eval.predictions import load_outputs

    calls = []

    def fake_engine(config):  # stands in for streaming_inference: one output per second of a 3 s clip
        calls.append(config)
        start = config["video_start"] or 0.0
        return [{"start": start + t, "end": start + t + 1, "text": f"second {t}"} for t in range(3)]

    events = [{"video_id": "yt1", "event_id": 5, "begin": 10.0, "end": 13.0, "event_title": "T", "preasr_text": "p",
               "event_asr_text": "r"}]
    out = tmp_path / "gen.jsonl"
    n = generate_predictions(generation_jobs(events, "livesports"), out, {"fps": 2}, tmp_path, fake_engine)
    assert n == 3
    assert calls[0]["fps"] == 2 and calls[0]["video_start"] == 10.0 and calls[0]["previous_text"] == "p"
    assert calls[0]["video_path"] == str(tmp_path / "yt1")
    outputs = load_outputs(out, "model")
    assert [o.event_id for o in outputs.by_video["yt1"]] == ["5", "5", "5"]
