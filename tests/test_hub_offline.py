"""A hub id without network: one clear line in seconds (model/hub.py), not minutes of retries; a cached copy is used.

Subprocesses, because huggingface_hub reads HF_HOME / HF_ENDPOINT / HF_HUB_OFFLINE when it is imported. The
"network" is a loopback server that accepts connections and never answers (a black-holed hub), or offline mode.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixture_video import write_video

ROOT = Path(__file__).resolve().parents[1]
HUB_ID = "Qwen/Qwen3-VL-2B-Instruct"


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update({"HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONPATH": str(ROOT)}, **extra)
    return env


@pytest.fixture
def silent_hub():
    """A loopback 'hub' that takes the connection and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


def _cli(env, *args, timeout=120):
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "streaming_vlm.inference.inference", *map(str, args)], env=env,
                       capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    return r, time.monotonic() - t0


def _one_line(r):
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "hub-not-answering"])
def test_hub_id_without_network_is_one_clear_line_in_seconds(offline, silent_hub, tmp_path):
    video = write_video(tmp_path / "v.mp4", seconds=1)
    env = _env(tmp_path, HF_HUB_OFFLINE="1") if offline else _env(tmp_path, HF_ENDPOINT=silent_hub)
    r, wall = _cli(env, "--model_path", HUB_ID, "--video_path", video, "--device", "cpu")
    line = _one_line(r)
    assert f"cannot load {HUB_ID}: it is not in the local Hugging Face cache" in line
    assert f"hf download {HUB_ID} --local-dir DIR" in line
    assert ("HF_HUB_OFFLINE is set" if offline else f"{silent_hub} did not answer") in line
    assert wall < 90, wall  # imports + one 5 s probe; transformers' own retries take minutes


def test_a_cached_hub_id_loads_when_the_hub_does_not_answer(tiny_ckpt, silent_hub, tmp_path):
    """The files in the cache layout `hf download` leaves (refs/main -> snapshots/<sha>/): the CLI streams."""
    sha = "0" * 40
    repo = tmp_path / "hf" / "hub" / f"models--{HUB_ID.replace('/', '--')}"
    shutil.copytree(tiny_ckpt, repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    video = write_video(tmp_path / "v.mp4", seconds=2)
    vtt = tmp_path / "out.vtt"
    r, _ = _cli(_env(tmp_path, HF_ENDPOINT=silent_hub), "--model_path", HUB_ID, "--video_path", video,
                "--device", "cpu", "--max_new_tokens", "2", "--output_path", vtt, "--no_progress")
    assert r.returncode == 0, r.stderr
    assert vtt.read_text().startswith("WEBVTT") and vtt.read_text().count(" --> ") == 2
