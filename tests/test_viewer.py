"""The viewer page in a real headless Chromium (Debian's chromium + chromedriver), driven over WebDriver.

- `python -m streaming_vlm.viewer VIDEO CAPTIONS.vtt --out page.html`, opened from file://: the track has the
  VTT's cues, the list beside the video shows them, a click on a cue moves `currentTime` there and highlights it,
  and a screenshot of the page is not blank.
- `--serve` on a live run (a pipe the test feeds): a cue made after the page loaded appears in it, and a question
  typed in the page is answered in it and in the VTT.
- Bad input to the viewer CLI: one line, exit 2.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.fixture_video import write_video

sys.path.insert(0, str(Path(__file__).parent))
from live_streams import stream_bytes  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
VTT = """WEBVTT

00:00:00.000 --> 00:00:01.000
the kick-off

00:00:01.000 --> 00:00:02.000
a long ball &amp; a header

00:00:02.000 --> 00:00:03.000
...

00:00:03.000 --> 00:00:04.000
shot on goal
"""


def _need_browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(f"headless browser tests need {CHROMIUM} and {CHROMEDRIVER} (Debian: chromium chromium-driver)")
    pytest.importorskip("selenium", reason="the browser tests drive Chromium with selenium (the dev extras)")


@pytest.fixture
def browser(tmp_path):
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required", "--window-size=1200,700",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _not_blank(driver, path: Path) -> None:
    from PIL import Image

    png = driver.get_screenshot_as_png()
    path.write_bytes(png)
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)
    assert pixels.std() > 10 and len(np.unique(pixels)) > 20, "the screenshot is blank"


def test_static_page_in_chromium(browser, tmp_path):
    video = write_video(tmp_path / "media" / "game.mp4", seconds=4, fps=24)
    vtt = tmp_path / "game.vtt"
    vtt.write_text(VTT)
    page = tmp_path / "site" / "game.html"
    page.parent.mkdir()
    proc = subprocess.run([sys.executable, "-m", "streaming_vlm.viewer", video, vtt, "--out", page],
                          capture_output=True, text=True, env=ENV, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(page) and "4 cues" in proc.stderr
    browser.get(page.as_uri())
    js = browser.execute_script
    _wait(lambda: js("return document.getElementById('video').textTracks[0].cues?.length") == 4, 30, "the cues")
    assert js("return document.getElementById('video').readyState") >= 1 or _wait(
        lambda: js("return document.getElementById('video').readyState") >= 1, 30, "the video")
    items = browser.find_elements("css selector", "#cues li")
    assert [re.sub(r"^\d+:\d\d", "", li.text).strip() for li in items] == [
        "the kick-off", "a long ball & a header", "...", "shot on goal"]
    items[3].click()
    _wait(lambda: abs(js("return document.getElementById('video').currentTime") - 3.0) < 0.05, 10, "the seek")
    _wait(lambda: "active" in items[3].get_attribute("class"), 10, "the highlight")
    assert "active" not in items[0].get_attribute("class")
    items[1].click()
    _wait(lambda: abs(js("return document.getElementById('video').currentTime") - 1.0) < 0.05, 10, "the seek")
    _wait(lambda: "active" in items[1].get_attribute("class") and "active" not in items[3].get_attribute("class"),
          10, "the highlight to move")
    assert [("active" in li.get_attribute("class")) for li in items] == [False, True, False, False]
    assert not browser.find_element("id", "ask").is_displayed()  # questions only in a live page
    _not_blank(browser, tmp_path / "static.png")


@pytest.mark.parametrize("case,needle", [("no_video", "video not found"), ("not_vtt", "not a WebVTT file"),
                                         ("no_dir", "output folder does not exist")])
def test_viewer_bad_input_one_line(tmp_path, capsys, case, needle):
    from streaming_vlm.viewer.__main__ import main

    video = write_video(tmp_path / "v.mp4", seconds=1)
    vtt = tmp_path / "c.vtt"
    vtt.write_text("not captions" if case == "not_vtt" else VTT)
    args = [tmp_path / "missing.mp4" if case == "no_video" else video, vtt,
            "--out", tmp_path / ("missing/p.html" if case == "no_dir" else "p.html")]
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    assert exit_.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0]


def test_serve_live_run_in_chromium(browser, tiny_ckpt, tmp_path):
    import json
    import threading

    from selenium.webdriver.common.keys import Keys

    chunks = stream_bytes(8)
    vtt, out = tmp_path / "live.vtt", tmp_path / "live.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "streaming_vlm.inference.inference", "--model_path", tiny_ckpt,
                             "--video_path", "-", "--serve", "0", "--output_path", vtt, "--emit_json", out,
                             "--no_progress", "--max_new_tokens", "2", "--max_answer_tokens", "3", "--seed", "0",
                             "--device", "cpu", "--window_size", "4", "--stall_timeout", "120"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=ENV)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(ln.decode() for ln in proc.stderr), daemon=True).start()
    fed = 0

    def feed(upto: int) -> None:
        nonlocal fed
        while fed < upto:
            proc.stdin.write(chunks[fed])
            proc.stdin.flush()
            fed += 1

    def cues_in_file() -> int:  # while the run streams, its JSON lines are in <out>.partial
        partial = out.with_name(out.name + ".partial")
        return sum(json.loads(x)["type"] == "segment" for x in partial.read_text().splitlines()) if partial.exists() else 0

    try:
        url = _wait(lambda: next((m[1] for ln in lines if (m := re.search(r"viewer: (http://\S+)", ln))), None),
                    120, "the viewer URL")
        assert url.startswith("http://127.0.0.1:")
        feed(2)
        _wait(lambda: cues_in_file() >= 1 or proc.poll() is not None, 120, "the first cue")
        assert proc.poll() is None, "".join(lines)
        browser.get(url)
        # the cues in the list (a second skipped while the machine was busy is a list item too, not a cue)
        items = lambda: browser.find_elements("css selector", "#cues li:not(.skipped)")  # noqa: E731
        _wait(lambda: len(items()) >= 1, 120, "the cues made before the page loaded")
        before = len(items())
        feed(4)  # seconds 2-3 complete after the page loaded
        _wait(lambda: len(items()) > before, 120, "a cue made after the page loaded")
        # both counts in one script call: cues keep arriving while the test reads them
        n_track, n_items = browser.execute_script(
            "return [document.getElementById('video').textTracks[0].cues.length,"
            " document.querySelectorAll('#cues li:not(.skipped)').length]")
        assert n_track == n_items > before
        box = browser.find_element("id", "question")
        box.send_keys("Who scored?", Keys.ENTER)
        # the question's state has its own line: the cues arriving meanwhile rewrite only the count
        _wait(lambda: browser.find_element("id", "asked").text == "asked: Who scored?", 120,
              "the question to be accepted")
        feed(6)  # the question is answered before the next second
        answer = _wait(lambda: next((li.text for li in items() if "Q: Who scored?" in li.text), None), 120,
                       "the answer in the page")
        assert "A:" in answer
        _wait(lambda: browser.find_element("id", "asked").text == "answered: Who scored?", 10, "the answered state")
        _not_blank(browser, tmp_path / "serve.png")
        feed(8)
        proc.stdin.close()  # the source ends: the run ends, the page is told, the server stays up
        _wait(lambda: "ended" in browser.find_element("id", "status").text, 120, "the end of the stream")
        assert any("stays up" in ln for ln in lines)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 0, "".join(lines)  # a loaded 2-core machine can take long to tear down
    finally:
        proc.kill()
    assert "Q: Who scored?" in vtt.read_text()


def test_server_over_http(tmp_path):
    """The --serve server on loopback, with a plain HTTP client: the page, byte ranges of the video, the event
    stream, questions, and requests it refuses."""
    import http.client
    import json

    from streaming_vlm.viewer.server import ViewerServer

    video = write_video(tmp_path / "game.mp4", seconds=1)
    data = video.read_bytes()
    server = ViewerServer(0, video_path=str(video))

    def request(method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()

    try:
        status, _, page = request("GET", "/")
        assert status == 200 and b'src="/video"' in page and b"EventSource" in page
        status, headers, part = request("GET", "/video", headers={"Range": "bytes=10-19"})
        assert status == 206 and part == data[10:20] and headers["Content-Range"] == f"bytes 10-19/{len(data)}"
        status, _, whole = request("GET", "/video")
        assert status == 200 and whole == data
        assert request("GET", "/", headers={"Host": "attacker.example:80"})[0] == 403
        assert request("POST", "/ask", b"who?", {"Content-Type": "text/plain"})[0] == 415
        status, _, _ = request("POST", "/ask", json.dumps({"question": " who  scored? "}),
                               {"Content-Type": "application/json"})
        assert status == 202 and server.questions.get_nowait() == "who scored?"
        server.segment({"start": 0.0, "end": 1.0, "text": "a <goal> & more"})
        server.skipped({"type": "skipped", "start": 1.0, "end": 3.0, "reason": "behind"})
        server.close()
        status, headers, body = request("GET", "/events")
        assert status == 200 and headers["Content-Type"] == "text/event-stream"
        events = [json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: {\"")]
        assert [e["type"] for e in events] == ["segment", "skipped"] and events[0]["text"] == "a <goal> & more"
        assert body.decode().rstrip().endswith("event: end\ndata: {}")
        assert request("POST", "/ask", json.dumps({"question": "late?"}), {"Content-Type": "application/json"}
                       )[0] == 409
    finally:
        server.shutdown()
