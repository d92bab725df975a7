"""The whole path on a checkpoint as the hub ships it (`tiny --hub-like`: its chat template drops the previous-text
role): stage 1 trains on windows with previous text, stage 2 starts from it with the win-rate eval callback, the CLI
streams the result with --previous_text past the first eviction (the folded words and the previous text stay in
the cache's token ids), and the eval CLI generates with it. The trained checkpoint gives exactly the token layout it
was trained on. The trainings run as subprocesses (train.py); the two CLIs run their `main` in-process (the same
entry points, minus their import time).
"""

from __future__ import annotations

import json

import pytest
import torch
from test_train_e2e import train  # train.py in a subprocess, with the test environment

PREVIOUS = "Blue keep the ball in midfield and look for a gap"
pytestmark = pytest.mark.slow  # two train.py runs, two streams and an eval: minutes on a shared 2-core machine


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("hubdata") / "data"
    generate_dataset(root, train_games=1, eval_games=1, duration=40, eval_duration=12, clips=2, seed=9)
    return root


def _args(data, ckpt, out, experiment, steps, batch):
    return [f"experiment={experiment}", f"data.root={data}", "data.generate=null",
            f"model.name_or_path={ckpt}", f"output_dir={out}", f"trainer.max_steps={steps}",
            f"trainer.global_batch_size={batch}", "trainer.save_steps=100"]


def test_stage1_stage2_cli_and_eval_on_a_hub_like_checkpoint(data, hub_like_ckpt, tmp_path):
    from streaming_vlm.data.dataset import build_train_dataset
    from streaming_vlm.eval.cli import main as eval_main
    from streaming_vlm.inference.inference import main as inference_main
    from streaming_vlm.inference import StreamingConfig, StreamingEngine
    from streaming_vlm.inference.cache import PREVIOUS as PREVIOUS_KIND
    from streaming_vlm.inference.cache import REPLY
    from streaming_vlm.inference.frames import VideoFrameSource
    from tests.fixture_video import write_video
    from streaming_vlm.model.loading import load_model, load_processor
    from streaming_vlm.training.curve import read_records

    # stage 1: every step's windows; the ones after the first carry previous text (the hub template drops it)
    s1 = tmp_path / "stage1"
    train(_args(data, hub_like_ckpt, s1, "smoke_stage1", 2, 2) + ["eval=none", "data.min_words=1"])
    hub_processor = load_processor(hub_like_ckpt)
    cfg = {"root": str(data), "train_file": str(data / "train_with_seeks.jsonl"), "window": 8, "stride": 4,
           "min_words": 1, "text_sink": 64, "text_sliding_window": 64, "min_pixels": 4096, "max_pixels": 4096,
           "total_pixels": 262144}
    trained_on = build_train_dataset(cfg, hub_processor)
    samples = [i for r in read_records(s1) for i in r["samples"]]
    header = hub_processor.tokenizer("<|im_start|>previous text\n", add_special_tokens=False)["input_ids"]

    def has_previous(ids):
        ids = ids.tolist()
        return any(ids[k:k + len(header)] == header for k in range(len(ids)))

    assert len(samples) == 4 and any(has_previous(trained_on[i]["input_ids"]) for i in samples)
    # the trained checkpoint, loaded as the CLI loads it, lays out those windows exactly as training did
    again = build_train_dataset(cfg, load_processor(s1))
    for i in samples:
        assert torch.equal(again[i]["input_ids"], trained_on[i]["input_ids"])
        assert torch.equal(again[i]["labels"], trained_on[i]["labels"])

    # stage 2 from stage 1, with the win-rate eval callback (baseline: the initial model) on one held-out game
    s2 = tmp_path / "stage2"
    r = train(_args(data, hub_like_ckpt, s2, "smoke_stage2", 1, 1) + [  # one step of one clip
        f"init_from={s1}", "data.min_words=1", "callbacks=win_rate", "callbacks.win_rate.minutes=0.2",
        "callbacks.win_rate.max_streams=1", "callbacks.win_rate.segment_seconds=4", "callbacks.win_rate.min_words=1",
        "callbacks.win_rate.inference.window_size=2", "callbacks.win_rate.inference.max_new_tokens=3"])
    assert f"model {s1}" in r.stdout
    win = json.loads((s2 / "win_rate.json").read_text())
    assert win and all(v["eval/votes"] > 0 for v in win.values())

    # the CLI: --previous_text, a 2 s vision window over 5 s, so seconds 0..2 are evicted and their words fold
    video = write_video(tmp_path / "game.mp4", seconds=5, fps=8)
    vtt = tmp_path / "out.vtt"
    flags = {"--previous_text": PREVIOUS, "--window_size": 2, "--max_new_tokens": 3, "--min_new_tokens": 2,
             "--seed": 0, "--device": "cpu", "--min_pixels": 4096, "--max_pixels": 4096}
    inference_main(["--model_path", str(s2), "--video_path", str(video), "--output_path", str(vtt), "--no_progress",
                    *[str(x) for kv in flags.items() for x in kv]])  # the CLI's main, in-process
    assert vtt.read_text().count(" --> ") == 5
    # the same settings in-process: what the cache holds after the evictions
    config = StreamingConfig.from_any({k.lstrip("-"): v for k, v in flags.items()} | {"progress": False})
    engine = StreamingEngine(load_model(s2, device="cpu"), load_processor(s2), config)
    engine.start()
    first_reply = None
    for _ in engine.stream(VideoFrameSource(video, config.fps)):
        if first_reply is None:
            (seg,) = [s for s in engine.cache.segments if s.kind == REPLY and s.second == 0]
            first_reply = seg.ids[:engine.policy.words_length(seg.ids)]
    assert engine.cache.tokens_evicted > 0 and len(first_reply) >= 2
    previous_ids = [i for s in engine.cache.segments if s.kind == PREVIOUS_KIND for i in s.ids]
    assert set(engine.cache.seconds()) == {3, 4}
    prev_text_ids = engine.tokenizer(PREVIOUS, add_special_tokens=False)["input_ids"]
    n = len(first_reply)
    assert any(previous_ids[k:k + len(prev_text_ids)] == prev_text_ids for k in range(len(previous_ids)))
    assert any(previous_ids[k:k + n] == first_reply for k in range(len(previous_ids)))

    # the eval CLI generates with it
    out = tmp_path / "predictions.jsonl"
    assert eval_main([str(a) for a in (
        "generate", "--reference", data / "eval_inf.jsonl", "--video-root", data, "--out", out, "--model_path", s2,
        "--set", "temperature=0", "--set", "window_size=2", "--set", "max_new_tokens=2", "--set", "device=cpu",
        "--set", "min_pixels=4096", "--set", "max_pixels=4096")]) in (0, None)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12 and all(isinstance(r["text"], str) for r in rows)
