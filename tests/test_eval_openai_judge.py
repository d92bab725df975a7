"""The OpenAI-compatible judge against a REAL chat-completions server on 127.0.0.1 (no HTTP mocks).

The server answers like an honest judge that can spot the model: whichever commentary contains "GOAL" wins. So a
correct run gives the model every vote in both orders, and any slot/order mix-up shows as a lost vote.
"""

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from streaming_vlm.errors import UserError
from streaming_vlm.eval.judge_cache import JudgeCache
from streaming_vlm.eval.openai_judge import JudgeRejected, JudgeUnavailable, OpenAIJudge
from streaming_vlm.eval.pipeline import judge_outputs
from streaming_vlm.eval.win_rate import win_rate_report

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-test-SECRET-1234"
FAST = dict(timeout=0.3, max_attempts=3, backoff_base=0.01)


def honest_answer(body):
    user = body["messages"][-1]["content"]
    a = re.search(r"<commentary_a>\n(.*?)\n</commentary_a>", user, re.S).group(1)
    return "A" if "GOAL" in a else "B"


class ChatServer:
    """ThreadingHTTPServer on port 0 speaking POST /v1/chat/completions.

    `script` lists how to treat the first requests, one item each, then every later request gets `default`:
    "ok", "slow" (answers after 1 s), "hang" (never answers), "429", "500", "401", "not-json", or ("say", text).
    """

    def __init__(self, script=(), default="ok", port=0):
        self.script, self.default = list(script), default
        self.requests = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with server.lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(raw)})
                    action = server.script.pop(0) if server.script else server.default
                try:
                    server.act(self, action, json.loads(raw))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): fine

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def act(self, handler, action, body):
        if action == "hang":
            self.release.wait(10)
            return
        if action == "slow":
            time.sleep(1.0)
            action = "ok"
        if action in ("429", "500", "401"):
            payload, status = b'{"error": {"message": "busy"}}', int(action)
        elif action == "not-json":
            payload, status = b"<html>502 bad gateway from a proxy</html>", 200
        else:
            content = action[1] if isinstance(action, tuple) else honest_answer(body)
            reply = {"id": "x", "object": "chat.completion", "model": body["model"],
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}
            payload, status = json.dumps(reply).encode(), 200
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def count(self):
        with self.lock:
            return len(self.requests)


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("EVAL_TEST_KEY", KEY)
    return "EVAL_TEST_KEY"


def closed_port_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/v1"


# --------------------------------------------------------------------------------------------- one comparison


def test_request_carries_temperature_zero_seed_model_and_bearer_key(api_key):
    with ChatServer() as server:
        judge = OpenAIJudge(server.url, "judge-model", api_key, seed=7, **FAST)
        verdict = judge.compare("ref", "a GOAL", "b", "inf-streams")
    assert verdict.choice == "A" and verdict.raw == "A"
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    body = request["body"]
    assert body["temperature"] == 0 and body["seed"] == 7 and body["model"] == "judge-model"
    assert body["messages"][0]["role"] == "system" and "A or B" in body["messages"][0]["content"]
    assert KEY not in repr(judge) and KEY not in judge.identity()


def test_slow_answer_times_out_then_the_retry_succeeds(api_key):
    with ChatServer(["slow"]) as server:
        start = time.monotonic()
        verdict = OpenAIJudge(server.url, "m", api_key, **FAST).compare("r", "x", "GOAL", "inf-streams")
        elapsed = time.monotonic() - start
    assert verdict.choice == "B"
    assert server.count == 2 and elapsed < 0.9  # gave up on the 1 s answer after 0.3 s


@pytest.mark.parametrize("status", ["429", "500"])
def test_rate_limit_and_server_errors_are_retried(api_key, status):
    with ChatServer([status, status]) as server:
        verdict = OpenAIJudge(server.url, "m", api_key, **FAST).compare("r", "GOAL", "x", "inf-streams")
    assert verdict.choice == "A" and server.count == 3


def test_retries_are_bounded_then_the_judge_is_unavailable(api_key):
    with ChatServer(default="500") as server:
        with pytest.raises(JudgeUnavailable, match="after 3 attempts .*HTTP 500"):
            OpenAIJudge(server.url, "m", api_key, **FAST).compare("r", "GOAL", "x", "inf-streams")
    assert server.count == 3


def test_closed_port_is_unavailable_after_bounded_attempts(api_key):
    with pytest.raises(JudgeUnavailable, match="connection failed") as err:
        OpenAIJudge(closed_port_url(), "m", api_key, **FAST).compare("r", "a", "b", "inf-streams")
    assert KEY not in str(err.value)


def test_rejected_request_is_not_retried_and_does_not_leak_the_key(api_key):
    with ChatServer(default="401") as server:
        with pytest.raises(JudgeRejected, match="HTTP 401") as err:
            OpenAIJudge(server.url, "m", api_key, **FAST).compare("r", "a", "b", "inf-streams")
    assert server.count == 1 and KEY not in str(err.value)


def test_garbage_replies(api_key):
    with ChatServer(["not-json"]) as server:  # a proxy error page once, then a real answer
        assert OpenAIJudge(server.url, "m", api_key, **FAST).compare("r", "GOAL", "x", "inf-streams").choice == "A"
        assert server.count == 2
    with ChatServer(default="not-json") as server:  # never readable: invalid, and not cached
        verdict = OpenAIJudge(server.url, "m", api_key, **FAST).compare("r", "GOAL", "x", "inf-streams")
        assert verdict.choice == "invalid" and not verdict.cacheable and server.count == 3
    with ChatServer(default=("say", "I think A is better")) as server:  # a real answer that is not a letter
        verdict = OpenAIJudge(server.url, "m", api_key, **FAST).compare("r", "GOAL", "x", "inf-streams")
        assert verdict.choice == "invalid" and verdict.raw == "I think A is better" and verdict.cacheable
        assert server.count == 1


def test_missing_api_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("EVAL_TEST_ABSENT_KEY", raising=False)
    with pytest.raises(UserError, match="EVAL_TEST_ABSENT_KEY is not set"):
        OpenAIJudge("http://127.0.0.1:1/v1", "m", "EVAL_TEST_ABSENT_KEY")


# ------------------------------------------------------------------------------------------- a whole evaluation


def game_files(n_segments=6):
    """One game with n 100 s segments of 200 reference words; the model says GOAL, the baseline does not."""
    content = [[100 * k + i * 0.4, 100 * k + (i + 1) * 0.4, f"w{i}"] for k in range(n_segments) for i in range(200)]
    reference = [{"video": "game.mp4", "title": "Final", "content": content, "preasr": ""}]
    model = {"game.mp4": [{"start": 100 * k + 10, "end": 100 * k + 11, "text": f"GOAL number {k}"} for k in range(n_segments)]}
    baseline = {"game.mp4": [{"start": 100 * k + 10, "end": 100 * k + 11, "text": f"play {k} continues"} for k in range(n_segments)]}
    return reference, model, baseline


def test_nothing_is_lost_under_retries_and_concurrency(api_key):
    reference, model, baseline = game_files(6)
    with ChatServer(["429", "500", "slow", "not-json", "500", "429"]) as server:
        # 7 attempts: even if one comparison drew all six failures it still gets its answer
        judge = OpenAIJudge(server.url, "m", api_key, **{**FAST, "max_attempts": 7})
        _, records = judge_outputs(model, baseline, reference, judge, concurrency=3)
    assert len(records) == 12
    assert {(r["segment"], r["order"]) for r in records} == {
        (f"game.mp4#{100 * k}-{100 * (k + 1)}", order) for k in range(6) for order in ("model_first", "model_second")
    }
    assert all(r["outcome"] == "model" for r in records)
    assert win_rate_report(records)["overall"]["win_rate_pct"] == 100.0


def test_cache_resumes_without_paying_again(api_key, tmp_path):
    reference, model, baseline = game_files(5)
    cache_path = tmp_path / "cache.jsonl"

    # first run dies after 4 answers: the judge goes down (every attempt 500)
    with ChatServer(["ok"] * 4, default="500") as server:
        judge = OpenAIJudge(server.url, "m", api_key, **FAST)
        with pytest.raises(JudgeUnavailable):
            judge_outputs(model, baseline, reference, judge, cache=cache_path, concurrency=1)
    assert len(JudgeCache(cache_path)) == 4
    port = server.port  # the judge's identity includes its URL: resume against the same endpoint

    # resumed run: only the 6 remaining comparisons are asked
    with ChatServer(port=port) as server:
        judge = OpenAIJudge(server.url, "m", api_key, **FAST)
        _, records = judge_outputs(model, baseline, reference, judge, cache=cache_path, concurrency=2)
    assert server.count == 10 - 4
    assert len(records) == 10 and all(r["outcome"] == "model" for r in records)

    # a third run pays nothing
    with ChatServer(port=port) as server:
        judge = OpenAIJudge(server.url, "m", api_key, **FAST)
        _, again = judge_outputs(model, baseline, reference, judge, cache=cache_path)
    assert server.count == 0 and again == records
    assert KEY not in cache_path.read_text()


# --------------------------------------------------------------------------------------------------- the CLI


def run_cli(tmp_path, *args, env_key=KEY):
    reference, model, baseline = game_files(2)
    (tmp_path / "ref.jsonl").write_text(json.dumps(reference[0]) + "\n")
    for name, outputs in (("model", model), ("base", baseline)):
        rows = [{"video": v, **seg} for v, segs in outputs.items() for seg in segs]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {k: v for k, v in os.environ.items() if k != "EVAL_TEST_KEY"}
    env["PYTHONPATH"] = str(REPO)
    if env_key:
        env["EVAL_TEST_KEY"] = env_key
    cmd = [sys.executable, "-m", "streaming_vlm.eval", "judge", "--predictions", str(tmp_path / "model.jsonl"),
           "--baseline", str(tmp_path / "base.jsonl"), "--reference", str(tmp_path / "ref.jsonl"),
           "--out", str(tmp_path / "verdicts.jsonl"), "--judge", "openai", "--api-key-env", "EVAL_TEST_KEY",
           "--timeout", "0.3", "--max-attempts", "2", "--backoff", "0.01", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=60)


def assert_one_line_error(result, *needles):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and KEY not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_cli_judges_through_the_server(tmp_path):
    with ChatServer() as server:
        result = run_cli(tmp_path, "--base-url", server.url, "--model", "m", "--concurrency", "2")
    assert result.returncode == 0, result.stderr
    assert server.count == 4 and "100.00" in result.stdout
    rows = [json.loads(line) for line in (tmp_path / "verdicts.jsonl").read_text().splitlines()]
    assert rows[0]["record"] == "run" and rows[0]["judge"] == f"openai|m|{server.url}"
    assert KEY not in (tmp_path / "verdicts.jsonl.cache.jsonl").read_text()


def test_cli_closed_port_exits_with_one_line(tmp_path):
    assert_one_line_error(run_cli(tmp_path, "--base-url", closed_port_url()), "did not answer after 2 attempts")


def test_cli_server_that_never_answers_exits_with_one_line(tmp_path):
    with ChatServer(default="hang") as server:
        result = run_cli(tmp_path, "--base-url", server.url, "--concurrency", "1")
    assert_one_line_error(result, "no answer within 0.3 s", "rerun the same command to resume")
    assert not (tmp_path / "verdicts.jsonl").exists()


def test_cli_missing_api_key_exits_with_one_line(tmp_path):
    assert_one_line_error(run_cli(tmp_path, "--base-url", "http://127.0.0.1:9/v1", env_key=None), "EVAL_TEST_KEY is not set")
