"""`eval baseline` against a REAL OpenAI-compatible chat server on 127.0.0.1, over real synthetic mp4 games.

The server checks nothing itself: it records every request and answers with text derived from the request's time
range, so the tests can check the request shape (images, timing, previous commentary), retries on 429/5xx, the cost
report, and that a killed run resumed sends no answered request twice.
"""

import base64
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from streaming_vlm.eval.baseline import make_baseline
from streaming_vlm.eval.baseline_protocol import BaselineProtocol, thin, windows
from streaming_vlm.eval.chat_client import ChatClient
from streaming_vlm.eval.generate import generation_jobs
from streaming_vlm.eval.predictions import load_outputs
from test_eval_openai_judge import ChatServer  # the real loopback chat-completions server of the judge tests

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-baseline-SECRET-9876"
TIME_RANGE = re.compile(r"Time range: ([\d.]+) ~ ([\d.]+) s\. Frames sampled at ([\d.]+) fps \(capped\)\.")


def answer_for(body):
    text = body["messages"][1]["content"][0]["text"]
    start, end, _ = TIME_RANGE.search(text).groups()
    return f"Play goes on between {start} and {end}."


def body_hash(body):
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class VisionChatServer(ChatServer):
    """The judge tests' real loopback server (`script` items "ok", "429", "500", "hang", then `default`), answering
    like a vision commentator: text from the request's time range, and a usage object (prompt 100 + 10 per image,
    completion 7). `answered` lists the bodies that got a 200."""

    def __init__(self, script=(), default="ok", port=0):
        super().__init__(script, default, port)
        self.answered = []

    def act(self, handler, action, body):
        if action != "ok":
            return super().act(handler, action, body)
        images = sum(1 for part in body["messages"][1]["content"] if part["type"] == "image_url")
        reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": answer_for(body)}}],
                 "usage": {"prompt_tokens": 100 + 10 * images, "completion_tokens": 7}}
        payload = json.dumps(reply).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
        with self.lock:
            self.answered.append(body)


@pytest.fixture(scope="module")
def games(tmp_path_factory):
    """Two real 12 s synthetic games (mp4 through decord) and their Inf-Streams reference rows."""
    from data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("baseline_games")
    generate_dataset(root, train_games=0, eval_games=2, eval_duration=12, clips=0, seed=11)
    return root, root / "eval_inf.jsonl"


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("BASELINE_TEST_KEY", KEY)
    return "BASELINE_TEST_KEY"


SMALL = dict(window_seconds=5, fps=2, max_frames=4, frame_height=48, jpeg_quality=80)


def run_baseline(server, root, ref, out, api_key, concurrency=2, **protocol):
    jobs = generation_jobs([json.loads(line) for line in ref.read_text().splitlines()], "inf-streams")
    client = ChatClient(server.url, "vision-model", api_key, role="baseline model", timeout=5, max_attempts=4,
                        backoff_base=0.01, concurrency=concurrency)
    try:
        return make_baseline(jobs, out, client, BaselineProtocol(**{**SMALL, **protocol}), video_root=root,
                             concurrency=concurrency)
    finally:
        client.close()


def test_windows_and_thinning_rules():
    assert windows(0, 12, 5) == [(0, 5), (5, 10), (10, 12)]
    assert windows(230, 420, 100) == [(230, 300), (300, 400), (400, 420)]  # cut on the absolute clock
    assert thin(200, 60)[:3] == [0, 3, 7] and len(thin(200, 60)) == 60 and thin(200, 60)[-1] == 199
    assert thin(5, 60) == [0, 1, 2, 3, 4]


def test_requests_carry_frames_timing_and_previous_commentary(games, tmp_path, api_key):
    root, ref = games
    out = tmp_path / "baseline.jsonl"
    with VisionChatServer(["429", "500", "429"]) as server:
        header = run_baseline(server, root, ref, out, api_key, concurrency=2)
    assert len(server.requests) == 6 + 3  # 2 games x 3 windows, plus three retried refusals
    assert all(r["path"] == "/v1/chat/completions" and r["headers"]["Authorization"] == f"Bearer {KEY}" for r in server.requests)

    seen = []
    for body in server.answered:
        system, user = body["messages"]
        assert system["role"] == "system" and "present tense" in system["content"]
        assert body["model"] == "vision-model" and body["max_tokens"] == 400 and "temperature" not in body
        text, *images = user["content"]
        assert text["type"] == "text" and text["text"].startswith("Provide live commentary")
        start, end, fps = map(float, TIME_RANGE.search(text["text"]).groups())
        assert fps == 2
        # 2 fps ticks in [start, end) thinned to at most 4, each a 48 px high JPEG data URI
        assert len(images) == min(4, round((end - start) * 2))
        for part in images:
            uri = part["image_url"]["url"]
            assert uri.startswith("data:image/jpeg;base64,")
            image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
            assert image.format == "JPEG" and image.height == 48
        seen.append((start, end, text["text"]))
    assert sorted((s, e) for s, e, _ in seen) == [(0, 5), (0, 5), (5, 10), (5, 10), (10, 12), (10, 12)]
    # each later window's request holds the previous window's answer as context; the first holds none
    for start, end, text in seen:
        if start == 0:
            assert "Previous commentary" not in text
        else:
            context = text.split("Previous commentary (context): ", 1)[1]
            assert context.endswith(f"Play goes on between {start - 5:g} and {start:g}.")
            assert context.startswith("Play goes on between 0 and 5.")

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    head, body_rows = rows[0], rows[1:]
    assert head == header and head["record"] == "header" and head["protocol"]["max_frames"] == 4
    assert head["endpoint"] == {"base_url": server.url, "model": "vision-model", "api_key_env": api_key}
    assert head["cost"]["this_run"] == {"requests": 9, "prompt_tokens": 6 * 100 + 10 * (4 + 4 + 4) * 2,
                                        "completion_tokens": 6 * 7}
    assert [(r["start"], r["end"]) for r in body_rows] == [(0, 5), (5, 10), (10, 12)] * 2
    assert all(r["text"] == f"Play goes on between {r['start']:g} and {r['end']:g}." for r in body_rows)
    outputs = load_outputs(out, "baseline")  # what `judge` reads: the header is metadata, not a skipped line
    assert outputs.rows == 6 and outputs.skipped_lines == [] and outputs.header["system"] == "baseline"
    assert KEY not in out.read_text() and KEY not in Path(f"{out}.requests.jsonl").read_text()


def test_a_rerun_is_served_from_the_cache(games, tmp_path, api_key):
    root, ref = games
    out = tmp_path / "baseline.jsonl"
    with VisionChatServer() as server:
        first = run_baseline(server, root, ref, out, api_key)
        port = server.port
    first_rows = out.read_text().splitlines()[1:]
    with VisionChatServer(port=port) as server:  # same endpoint: same cache keys
        again = run_baseline(server, root, ref, out, api_key)
    assert server.requests == [] and again["answers_from_cache"] == 6 and first["answers_from_cache"] == 0
    assert again["cost"]["this_run"]["requests"] == 0
    assert again["cost"]["all_answers"] == first["cost"]["all_answers"]
    assert out.read_text().splitlines()[1:] == first_rows


def cli(*args, env_key=KEY):
    env = {k: v for k, v in os.environ.items() if k != "BASELINE_TEST_KEY"}
    env["PYTHONPATH"] = str(REPO)
    if env_key:
        env["BASELINE_TEST_KEY"] = env_key
    return [sys.executable, "-m", "streaming_vlm.eval", "baseline", *map(str, args)], env


def baseline_args(root, ref, out, url):
    return ["--reference", ref, "--video-root", root, "--out", out, "--base-url", url, "--model", "vision-model",
            "--api-key-env", "BASELINE_TEST_KEY", "--window-seconds", 5, "--max-frames", 4, "--frame-height", 48,
            "--concurrency", 1, "--timeout", 20, "--backoff", 0.01]


def test_killed_run_resumes_without_sending_an_answered_request_twice(games, tmp_path):
    root, ref = games
    out = tmp_path / "baseline.jsonl"
    with VisionChatServer(["ok", "429", "ok", "ok", "hang"]) as server:
        cmd, env = cli(*baseline_args(root, ref, out, server.url))
        process = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while len(server.requests) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(server.requests) == 5, process.communicate(timeout=5)
        process.send_signal(signal.SIGKILL)  # mid-run: the fifth request is in flight, never answered
        process.wait(timeout=10)
        first_answered = [body_hash(b) for b in server.answered]
        port = server.port
    assert len(first_answered) == 3 and not out.exists()

    with VisionChatServer(port=port) as server:
        cmd, env = cli(*baseline_args(root, ref, out, server.url))
        result = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    resent = [body_hash(r["body"]) for r in server.requests]
    assert not set(resent) & set(first_answered)  # nothing answered before the kill was asked again
    assert len(resent) == 6 - 3
    assert "3 from the cache" in result.stdout and "this run: 3 requests" in result.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()][1:]
    assert len(rows) == 6 and all(r["text"].startswith("Play goes on between") for r in rows)
    assert KEY not in result.stdout + result.stderr + out.read_text()


def test_endpoint_down_and_missing_key_are_one_line_errors(games, tmp_path):
    root, ref = games
    out = tmp_path / "baseline.jsonl"
    with VisionChatServer(default="500") as server:
        cmd, env = cli(*baseline_args(root, ref, out, server.url), "--max-attempts", 2)
        result = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "did not answer after 2 attempts (HTTP 500)" in lines[0] and "rerun the same command" in lines[0]
    assert not out.exists() and KEY not in result.stderr

    cmd, env = cli(*baseline_args(root, ref, out, "http://127.0.0.1:9/v1"), env_key=None)
    result = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "BASELINE_TEST_KEY is not set" in result.stderr.strip()
    assert len(result.stderr.strip().splitlines()) == 1
