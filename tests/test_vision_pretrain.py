"""The tiny default's vision-tower pretraining (`python -m streaming_vlm.model.vision_pretrain`): after it, the tower's
features tell a held-out game's goal seconds from its normal seconds, which the random tower's do not; and only
the tower's weights change."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def games(tmp_path_factory):
    from data.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("vision_games")
    generate_dataset(out, train_games=4, eval_games=1, duration=150, eval_duration=150, clips=0, seed=5)
    return out


def _held_out_separation(ckpt, games):
    """Goal seconds vs seconds with no event, in the eval game: mean cosines of the tower's merged features."""
    import torch
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    from streaming_vlm.model.vision_pretrain import load_seconds, separation

    processor = AutoProcessor.from_pretrained(ckpt)
    pv, grid, labels = load_seconds(games, "eval", processor, 4096, 4096)
    assert labels[:, 0].sum() >= 2, "the held-out game should have goal seconds"
    visual = Qwen3VLForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32).model.visual.eval()
    return separation(visual, pv, grid, labels, visual.spatial_merge_size)


def test_pretrained_tower_separates_held_out_event_frames(tiny_ckpt, games, tmp_path):
    from safetensors.torch import load_file

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, ckpt)
    before = _held_out_separation(ckpt, games)
    # the random tower: a goal second's features point where every other second's do
    assert before["normal_vs_normal"] - before["event_vs_normal"] < 0.05, before

    r = subprocess.run([sys.executable, "-m", "streaming_vlm.model.vision_pretrain", "--model", str(ckpt), "--data",
                        str(games), "--steps", "60", "--check-split", "eval"], cwd=ROOT, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    after = _held_out_separation(ckpt, games)
    assert after["normal_vs_normal"] - after["event_vs_normal"] > 0.15, after
    info = json.loads((ckpt / "vision_pretraining.json").read_text())
    assert info["held_out"]["probe"]["goal"]["recall"] >= 0.6, info["held_out"]["probe"]["goal"]

    old, new = load_file(tiny_ckpt / "model.safetensors"), load_file(ckpt / "model.safetensors")
    assert old.keys() == new.keys()
    changed = {k for k in old if not old[k].equal(new[k])}
    assert changed and all(".visual." in k or k.startswith("visual.") for k in changed), sorted(changed)[:5]
    assert any("merger" in k for k in changed)


def test_bad_input_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "streaming_vlm.model.vision_pretrain", "--model", str(tmp_path),
                        "--data", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
