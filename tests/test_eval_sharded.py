"""Sharded `eval generate`: 2 CPU worker processes give the same merged predictions as 1; a worker killed mid-run
loses only its unfinished video, and the rerun completes the same file. Real tiny checkpoint, real mp4 games.
(`generate` through the CLI, one worker, is tested in test_eval_cli.py.)"""

import json
import multiprocessing
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def games(tmp_path_factory):
    from data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("sharded_games")
    generate_dataset(root, train_games=0, eval_games=4, eval_duration=10, clips=0, seed=21)
    return root, root / "eval_inf.jsonl"


SETTINGS = {"temperature": 0, "window_size": 4, "max_new_tokens": 3, "device": "cpu"}


def test_two_workers_equal_one_and_a_killed_worker_resumes(tiny_ckpt, games, tmp_path):
    """The parents run in this process (no CLI start-up to pay); the workers are real spawned processes."""
    from streaming_vlm.errors import UserError
    from streaming_vlm.eval.generate import generation_jobs
    from streaming_vlm.eval.sharded_generate import generate_sharded

    root, ref = games
    reference = [json.loads(line) for line in ref.read_text().splitlines()]
    jobs, settings = generation_jobs(reference, "inf-streams"), {**SETTINGS, "model_path": str(tiny_ckpt)}
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"

    assert generate_sharded(jobs, one, settings, root, workers=1) == 40
    rows = [json.loads(line) for line in one.read_text().splitlines()]
    assert [r["video"] for r in rows] == [row["video"] for row in reference for _ in range(10)]  # 1 row a second
    assert not Path(f"{one}.parts").exists()  # merged, then the parts are removed

    # 2 workers: worker 0 streams videos 0 and 2, worker 1 videos 1 and 3. Kill worker 0 once its first video is
    # on disk: its second is lost, worker 1 finishes, the run stops with one message and keeps 3 of 4 videos.
    parts, outcome = Path(f"{two}.parts"), {}

    def sharded():
        try:
            outcome["rows"] = generate_sharded(jobs, two, settings, root, workers=2)
        except UserError as err:
            outcome["error"] = str(err)

    thread = threading.Thread(target=sharded)
    thread.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (parts / "00000.jsonl").exists():
        time.sleep(0.02)
    (worker0,) = [p for p in multiprocessing.active_children() if p.name == "eval-generate-0"]
    assert not (parts / "00002.jsonl").exists()  # worker 0 is streaming its second video
    os.kill(worker0.pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert re.fullmatch(r"worker 0 \(signal 9\) failed; 3/4 videos are kept in .*two\.jsonl\.parts: "
                        r"rerun the same command to resume", outcome.get("error", "")), outcome
    assert not two.exists() and sorted(p.name for p in parts.glob("0*.jsonl")) == [
        "00000.jsonl", "00001.jsonl", "00003.jsonl"]

    # the rerun streams only the lost video (in one spawned worker) and merges the same file as 1 worker
    assert generate_sharded(jobs, two, settings, root, workers=2) == 40
    assert two.read_bytes() == one.read_bytes()


def test_sharding_flags_are_checked():
    from streaming_vlm.errors import UserError
    from streaming_vlm.eval.cli import build_parser

    args = build_parser().parse_args(["generate", "--reference", "r", "--out", "o", "--devices", "0,1,3"])
    assert args.devices == ["0", "1", "3"] and args.workers == 1
    for bad, needle in ((["--workers", "0"], "must be >= 1"), (["--devices", "0,x"], "GPU indices"),
                        (["--devices", "1,1"], "listed twice")):
        with pytest.raises(UserError, match=needle):
            build_parser().parse_args(["generate", "--reference", "r", "--out", "o", *bad])


def test_a_rerun_with_other_settings_is_refused(tiny_ckpt, games, tmp_path):
    from streaming_vlm.errors import UserError
    from streaming_vlm.eval.sharded_generate import prepare_parts

    jobs = [{"video": "a.mp4", "event_id": None, "video_start": None, "video_end": None, "previous_text": "",
             "title": ""}]
    out = tmp_path / "gen.jsonl"
    parts = prepare_parts(out, jobs, {"model_path": "m", "temperature": 0, "device": "cpu"}, None)
    # the device is where a job runs, not what it is: a resume on another device is the same run
    assert prepare_parts(out, jobs, {"model_path": "m", "temperature": 0, "device": "cuda:1"}, None) == parts
    with pytest.raises(UserError, match="holds a run with other videos or settings"):
        prepare_parts(out, jobs, {"model_path": "m", "temperature": 0.7}, None)
