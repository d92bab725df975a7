"""Word-level quality figures (`streaming_vlm.eval.quality`, `python -m streaming_vlm.eval quality`) on real files
written by the synthetic generator, and the trainer's embedding param group."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streaming_vlm.eval.predictions import outputs_from_segments
from streaming_vlm.eval.quality import (commentary_quality, grounding, in_vocabulary, read_event_logs,
                                        segment_similarity, training_vocabulary)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def games(tmp_path_factory):
    """Two short training games and a held-out game of 150 s with goals, corners and saves, made as the demo
    makes its data (the generator's CLI)."""
    out = tmp_path_factory.mktemp("quality") / "data"
    subprocess.run([sys.executable, "-m", "data.synthetic", "--out", str(out), "--train-games", "2", "--eval-games", "1",
                    "--duration", "60", "--eval-duration", "150", "--clips", "2", "--seed", "5"],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)
    return out


def _reference(games):
    return [json.loads(line) for line in (games / "eval_inf.jsonl").read_text().splitlines()]


def _reference_as_outputs(games, edit=lambda text: text):
    """The held-out game's own reference commentary as per-second-like rows, each line's text edited."""
    ref = _reference(games)[0]
    return outputs_from_segments([{"video": ref["video"], "start": s, "end": e, "text": edit(t) + " ..."}
                                  for s, e, t in ref["content"]], "model")


def test_vocabulary_counts_words_outside_the_training_commentary(games):
    vocab = training_vocabulary([games / "train_with_seeks.jsonl"])
    assert {"red", "blue", "the"} <= vocab and "foreign" not in vocab
    outputs = outputs_from_segments([{"video": "v.mp4", "start": 0, "end": 1, "text": "the Red, the Blue ..."},
                                     {"video": "v.mp4", "start": 1, "end": 2, "text": " ..."},
                                     {"video": "v.mp4", "start": 2, "end": 3, "text": "GO憩 foreign the Red ..."}],
                                    "model")
    v = in_vocabulary(outputs, vocab)
    # the silence placeholder is no word; "go憩" and "foreign" are not commentary words
    assert (v["words"], v["in_vocabulary"]) == (8, 6)


def test_reference_scores_one_and_scrambled_text_scores_less(games):
    ref = _reference(games)
    exact = segment_similarity(_reference_as_outputs(games), ref, 30, 10)
    assert exact["segments"] >= 1 and exact["mean"] == pytest.approx(1.0)
    reversed_words = segment_similarity(_reference_as_outputs(games, lambda t: " ".join(t.split()[::-1])), ref, 30, 10)
    assert reversed_words["mean"] < 0.9
    silent = segment_similarity(outputs_from_segments([{"video": ref[0]["video"], "start": 0, "end": 1,
                                                        "text": " ..."}], "model"), ref, 30, 10)
    assert silent["mean"] == 0.0  # segments without output score 0, they are not dropped


def test_grounding_of_the_reference_and_of_a_shifted_copy(games):
    logs = read_event_logs(games / "events" / "eval")
    events = next(iter(logs.values()))
    n = sum(e["type"] in ("goal", "corner", "save") for e in events)
    assert n >= 3, "the held-out game should hold goals, corners or saves (seed 5)"
    g = grounding(_reference_as_outputs(games), logs)
    # the patterns cover every phrasing the generator uses: its own commentary names each such event within 3 s
    assert g["events"] == n and g["recall"] == 1.0
    late = _reference_as_outputs(games)
    for outs in late.by_video.values():  # the same commentary 20 s late names none of them on time
        outs[:] = [type(o)(o.start + 20, o.end + 20, o.text) for o in outs]
    assert grounding(late, logs)["recalled"] < n


def test_quality_cli_writes_the_figures_and_rejects_a_missing_events_folder(games, tmp_path):
    pred = tmp_path / "pred.jsonl"
    ref = _reference(games)[0]
    pred.write_text("".join(json.dumps({"video": ref["video"], "start": s, "end": e, "text": t}) + "\n"
                            for s, e, t in ref["content"]))
    base = [sys.executable, "-m", "streaming_vlm.eval", "quality", "--predictions", str(pred),
            "--reference", str(games / "eval_inf.jsonl"), "--vocabulary", str(games / "train_with_seeks.jsonl"),
            "--segment-seconds", "30", "--min-words", "10"]
    r = subprocess.run(base + ["--events", str(games / "events" / "eval"), "--json", str(tmp_path / "q.json")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    q = json.loads((tmp_path / "q.json").read_text())
    assert q["similarity"]["mean"] == pytest.approx(1.0) and q["grounding"]["recall"] == 1.0
    assert 0.5 < q["vocabulary"]["fraction"] <= 1.0  # a held-out game has a few words no training game used
    assert "commentary words:" in r.stdout and "grounded mentions:" in r.stdout
    bad = subprocess.run(base + ["--events", str(tmp_path / "nowhere")], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "no event logs" in bad.stderr


def test_commentary_quality_without_event_logs_has_no_grounding(games):
    q = commentary_quality(_reference_as_outputs(games), _reference(games),
                           training_vocabulary([games / "train_with_seeks.jsonl"]), None, 30, 10)
    assert "grounding" not in q and q["vocabulary"]["words"] > 0


def test_embedding_learning_rate_puts_the_tied_embedding_in_its_own_group(tiny_ckpt, tmp_path, monkeypatch):
    import torch
    from transformers import Qwen3VLForConditionalGeneration, TrainingArguments

    from streaming_vlm.training.trainer import StreamingTrainer

    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt, dtype=torch.float32)
    model.model.visual.requires_grad_(False)
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):  # one process, whatever an earlier test left in the env
        monkeypatch.delenv(var, raising=False)
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, use_cpu=True, report_to=[])
    trainer = StreamingTrainer(model=model, args=args, embedding_lr=2e-2)
    groups = trainer.create_optimizer().param_groups
    embedding = model.get_input_embeddings().weight
    assert model.lm_head.weight is embedding  # tied, as in the real 2B: one tensor, one group
    assert [g["lr"] for g in groups if any(p is embedding for p in g["params"])] == [2e-2]
    assert all(g["lr"] == 1e-3 for g in groups if all(p is not embedding for p in g["params"]))
    trained = sum(p.numel() for g in groups for p in g["params"])
    assert trained == sum(p.numel() for p in model.parameters() if p.requires_grad)  # nothing lost or doubled
    with pytest.raises(ValueError, match="embedding_learning_rate"):
        StreamingTrainer(model=model, args=args, embedding_lr=0.0)
