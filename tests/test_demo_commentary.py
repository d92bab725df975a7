"""The demo's way of training, on a smaller budget: does the tiny model's commentary on a held-out game read like
commentary? `python -m streaming_vlm.model.vision_pretrain` (60 of the demo's 150 steps) -> train.py
(experiment=smoke_stage1, the demo's recipe at 60 of its 350 steps) -> `python -m streaming_vlm.eval generate` with
the demo's inference settings and the CLI's default sampling -> `python -m streaming_vlm.eval quality`.

The thresholds sit below what this budget reaches on this data and well above what the recipe before the
embedding's own learning rate reached at the whole demo budget (figures: BENCHMARKS.md, issue 26); the untrained
model's words are arbitrary tokens of the 151k vocabulary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

STEPS = 60
PRETRAIN_STEPS = 60
# The demo's inference settings (scripts/demo.sh, INFER); sampling is the CLI's default.
INFER = ["window_size=8", "text_sink=64", "text_sliding_window=64", "min_pixels=4096", "max_pixels=4096",
         "max_new_tokens=6", "seed=0"]
MIN_COMMENTARY_WORDS = 0.88
MIN_ROUGE = 0.18


def _run(args, timeout):
    env = {**os.environ, "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{args[:3]}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


def test_demo_training_makes_commentary_words_on_a_held_out_game(tiny_ckpt, tmp_path):
    from data.synthetic import generate_dataset

    data = tmp_path / "data"
    generate_dataset(data, train_games=4, eval_games=1, duration=120, eval_duration=120, clips=0, seed=11)
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, ckpt)
    _run(["-m", "streaming_vlm.model.vision_pretrain", "--model", str(ckpt), "--data", str(data), "--steps",
          str(PRETRAIN_STEPS)], timeout=900)
    _run(["train.py", "experiment=smoke_stage1", f"data.root={data}", "data.generate=null",
          f"model.name_or_path={ckpt}", f"output_dir={tmp_path / 'stage1'}", f"trainer.max_steps={STEPS}",
          "trainer.save_steps=1000", "eval=none", "wandb.mode=disabled"], timeout=1800)
    pred = tmp_path / "pred.jsonl"
    _run(["-m", "streaming_vlm.eval", "generate", "--reference", str(data / "eval_inf.jsonl"), "--video-root",
          str(data), "--model_path", str(tmp_path / "stage1"), "--out", str(pred), *[f"--set={kv}" for kv in INFER]],
         timeout=600)
    _run(["-m", "streaming_vlm.eval", "quality", "--predictions", str(pred), "--reference",
          str(data / "eval_inf.jsonl"), "--vocabulary", str(data / "train_with_seeks.jsonl"), "--events",
          str(data / "events" / "eval"), "--segment-seconds", "30", "--min-words", "40", "--json",
          str(tmp_path / "q.json")], timeout=300)
    q = json.loads((tmp_path / "q.json").read_text())
    print(json.dumps({k: {x: y for x, y in v.items() if x != "per_segment"} for k, v in q.items()}))
    v, s = q["vocabulary"], q["similarity"]
    assert v["words"] >= 30, "the trained model should talk, not only stay silent"
    assert v["fraction"] >= MIN_COMMENTARY_WORDS, v
    assert s["segments"] >= 2 and s["mean"] >= MIN_ROUGE, s
