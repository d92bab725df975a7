"""The training eval callback (`WinRateCallback`): Inf-Streams win rate through the real streaming engine.

- one process: the logged numbers are exactly `win_rate_from_outputs` over `run_stream`'s outputs on the same
  streams (first N minutes) against a baseline file, judged by the offline judge; the model's mode and settings are
  restored; bad configs fail at bind time with one clear error;
- 2 CPU ranks under DeepSpeed ZeRO-3 (gloo; the session's ZeRO-3 runs, conftest.py `zero3_runs`): the baseline
  from the initial model and the evaluations at `every_n_steps` and at the end run on both ranks (streams split
  over ranks with the weights gathered once), rank 0 logs eval/win_rate and its vote counts into the trainer's log
  history, and training is unchanged by it (same per-step losses as the single-process reference run without
  evaluation); lockstep generation (the resumed run) has both ranks do the same work.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from streaming_vlm.errors import UserError

INFERENCE = {"max_new_tokens": 6, "window_size": 8, "min_pixels": 4096, "max_pixels": 4096, "text_sink": 64,
             "text_sliding_window": 64}


def _trainer(model, out):
    from transformers import Trainer, TrainingArguments

    return Trainer(model=model, args=TrainingArguments(output_dir=str(out), use_cpu=True, report_to=[]))


def test_callback_numbers_equal_win_rate_from_outputs(eval_games, tiny_ckpt, tmp_path):
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    from streaming_vlm.eval import OfflineJudge, load_outputs, win_rate_from_outputs
    from streaming_vlm.inference import StreamingConfig, run_stream
    from streaming_vlm.training.eval_callback import WinRateCallback

    ref_path = eval_games / "eval_inf.jsonl"
    ref_rows = [json.loads(line) for line in ref_path.read_text().splitlines()]
    video = ref_rows[0]["video"]
    # baseline (public row format): the reference itself in (0, 8] (beats an untrained model), silence in (8, 16],
    # nothing in (16, 24] (missing), nothing for the second game (not streamed: must not count)
    content = ref_rows[0]["content"]
    baseline_rows = [{"video": video, "start": s, "end": e, "text": t} for s, e, t in content if e <= 8]
    baseline_rows += [{"video": video, "start": float(t), "end": float(t + 1), "text": " ..."} for t in range(8, 16)]
    baseline = tmp_path / "baseline.jsonl"
    baseline.write_text("".join(json.dumps(r) + "\n" for r in baseline_rows))

    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt)
    processor = AutoProcessor.from_pretrained(tiny_ckpt)
    model.train()
    use_cache = model.config.use_cache = False  # as training loads it
    trainer = _trainer(model, tmp_path / "run")
    cb = WinRateCallback(reference=str(ref_path), baseline=str(baseline), every_n_steps=2, minutes=0.4,
                         max_streams=1, judge={"kind": "offline", "margin": 0.0}, segment_seconds=8, min_words=5,
                         inference=INFERENCE)
    cb.bind(trainer, processor)
    trainer.state.global_step = 1
    cb.on_step_end(trainer.args, trainer.state, trainer.control, model=model)
    assert not [h for h in trainer.state.log_history if "eval/win_rate" in h]  # not a multiple of 2
    trainer.state.global_step = 2
    trainer.control.should_log = True
    cb.on_step_end(trainer.args, trainer.state, trainer.control, model=model)
    assert trainer.control.should_log  # the step's own loss log still happens
    assert model.training and model.config.use_cache == use_cache

    # independently: the engine on the first 24 s of the first game, the reference cut there, the same judge
    config = StreamingConfig.from_any({"temperature": 0.0, "seed": 0, "progress": False, **INFERENCE})
    model.eval()
    segments = run_stream(model, processor, eval_games / video, config, start=0.0, end=24.0)
    ours = {video: [{"start": s["start"], "end": s["end"], "text": s["text"]} for s in segments]}
    ref_cut = [{**ref_rows[0], "content": [c for c in content if c[1] <= 24.0]}]
    expected = win_rate_from_outputs(ours, load_outputs(baseline, "baseline"), ref_cut, OfflineJudge(margin=0.0),
                                     segment_seconds=8, min_words=5)

    (logged,) = [h for h in trainer.state.log_history if "eval/win_rate" in h]
    o = expected["overall"]
    assert logged["step"] == 2
    assert logged["eval/win_rate"] == o["win_rate_pct"]
    assert (logged["eval/votes"], logged["eval/model_votes"], logged["eval/baseline_votes"], logged["eval/ties"],
            logged["eval/invalid"], logged["eval/missing"]) == (o["votes"], o["model_votes"], o["baseline_votes"],
                                                               o["ties"], o["invalid"], o["missing_votes"])
    assert o["votes"] == 6 and o["baseline_votes"] >= 2 and o["missing_votes"] == 2  # a mixed, non-trivial case
    out = tmp_path / "run"
    assert json.loads((out / "win_rate.json").read_text())["2"]["eval/votes"] == 6
    report = json.loads((out / "win_rate" / "report_step2.json").read_text())
    assert report["overall"] == o and report["per_video"] == expected["per_video"]
    written = [json.loads(line) for line in (out / "win_rate" / "predictions_step2.jsonl").read_text().splitlines()]
    assert written == [{"video": video, **seg} for seg in ours[video]]

    cb.on_train_end(trainer.args, trainer.state, trainer.control, model=model)  # same step: not evaluated twice
    assert len([h for h in trainer.state.log_history if "eval/win_rate" in h]) == 1


def test_bad_callback_configs_fail_at_bind(eval_games, tiny_ckpt, tmp_path, monkeypatch):
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    from streaming_vlm.training.eval_callback import WinRateCallback

    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt)
    processor = AutoProcessor.from_pretrained(tiny_ckpt)
    trainer = _trainer(model, tmp_path / "run")
    ref = str(eval_games / "eval_inf.jsonl")

    def bind(**kw):
        WinRateCallback(**{"reference": ref, "segment_seconds": 8, "min_words": 5, **kw}).bind(trainer, processor)

    with pytest.raises(UserError, match="baseline predictions file not found"):
        bind(baseline=str(tmp_path / "nope.jsonl"))
    monkeypatch.delenv("WR_TEST_NO_KEY", raising=False)
    with pytest.raises(UserError, match="WR_TEST_NO_KEY is not set"):
        bind(judge={"kind": "openai", "api_key_env": "WR_TEST_NO_KEY"})
    with pytest.raises(UserError, match="reference file not found"):
        bind(reference=str(tmp_path / "none.jsonl"))
    with pytest.raises(UserError, match="at least 5000 words"):
        bind(min_words=5000)
    with pytest.raises(UserError, match="eval video not found"):
        bind(video_root=str(tmp_path))
    with pytest.raises(UserError, match="unknown config key"):
        bind(inference={"window": 3})
    video = json.loads(Path(ref).read_text().splitlines()[0])["video"]
    corrupt = tmp_path / "corrupt" / video
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(os.urandom(4096))
    with pytest.raises(UserError, match=corrupt.name):
        bind(video_root=str(tmp_path / "corrupt"))


# ---- 2 CPU ranks, ZeRO-3 ------------------------------------------------------------------------------------------
# The session's ZeRO-3 runs (conftest.py `zero3_runs`): the reference run's training on 2 ranks with this callback on
# `eval_games` (two 24-s games). test_train_e2e.py checks their training (losses, gathered model, exact resume).
@pytest.mark.slow
def test_win_rate_logged_during_a_two_rank_zero3_run(zero3_runs, reference_run):
    from streaming_vlm.training.curve import read_records

    out, r = zero3_runs["first"]  # every_n_steps=4 over 6 steps, minutes=0.2, segment_seconds=6, min_words=3
    assert "world size 2" in r.stdout and "weights partitioned at load (ZeRO-3)" in r.stdout

    # every evaluation ran on both ranks, one of the two streams each (weights gathered once, streams split)
    for what, step in (("baseline", 0), ("model", 4), ("model", 6)):
        for rank in (0, 1):
            line = f"win-rate eval ({what}, step {step}, rank {rank}/2, gather): 1 stream(s), 12 s of video"
            assert r.stdout.count(line) == 1, (line, r.stdout[-4000:])
    assert r.stdout.count("win rate at step 4: ") == 1 and r.stdout.count("win rate at step 6: ") == 1  # rank 0
    assert "win rate at step 2: " not in r.stdout

    # the baseline and the predictions hold both streams: rank 1's outputs reached rank 0
    wr = out / "win_rate"
    for name in ("baseline_initial_model.jsonl", "predictions_step4.jsonl", "predictions_step6.jsonl"):
        rows = [json.loads(line) for line in (wr / name).read_text().splitlines()]
        assert len(rows) == 24 and len({row["video"] for row in rows}) == 2, name

    # logged into the trainer's log history (checkpoint-4 holds the history up to step 4) with its vote counts
    history = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    (logged,) = [h for h in history if "eval/win_rate" in h]
    assert logged["step"] == 4 and logged["eval/votes"] == 8  # 2 games x 2 segments of 6 s x 2 orders
    assert sum(logged[f"eval/{k}"] for k in ("model_votes", "baseline_votes", "ties", "invalid", "missing")) == 8
    assert 0.0 <= logged["eval/win_rate"] <= 100.0
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3, 4]  # the steps' loss logs are not swallowed
    summary = json.loads((out / "win_rate.json").read_text())
    assert sorted(summary) == ["4", "6"] and summary["4"] == {k: v for k, v in logged.items() if k.startswith("eval/")}

    # training itself is untouched: same per-step losses as the single-process reference run without the callback
    ref = {rec["step"]: rec["loss"] for rec in read_records(reference_run[0])}
    got = {rec["step"]: rec["loss"] for rec in read_records(out)}
    assert sorted(got) == sorted(ref) == list(range(1, 7))
    for step in ref:
        assert abs(got[step] - ref[step]) <= 1e-4 * ref[step], (step, got[step], ref[step])


@pytest.mark.slow
def test_lockstep_generation_under_zero3(zero3_runs):
    """`zero3_generation: lockstep`: no gathered copy; both ranks stream the same stream through the partitioned
    model, rank 0's tokens broadcast, so the ranks do identical work and nobody waits forever. (The resumed ZeRO-3
    run: its win-rate files were removed, so the baseline comes from the step-4 model; then the end, step 6.)"""
    out, r, _ = zero3_runs["resumed"]  # minutes=0.05, max_streams=1, segment_seconds=3, min_words=1
    assert "win-rate baseline" in r.stdout and "is missing on resume" in r.stderr
    for what, step in (("baseline", 4), ("model", 6)):
        # matched in the whole output, not per line: the two ranks' prints can land on one line
        found = re.findall(rf"win-rate eval \({what}, step {step}, rank (\d)/2, lockstep\): "
                           r"(\d+ stream\(s\), [\d.]+ s of video, \d+ tokens)", r.stdout)
        lines = [text for _, text in found]
        assert sorted(rank for rank, _ in found) == ["0", "1"], found
        assert len(lines) == 2 and lines[0] == lines[1], lines  # both ranks, the same streams and token counts
    assert r.stdout.count("win rate at step 6: ") == 1
    summary = json.loads((out / "win_rate.json").read_text())
    assert list(summary) == ["6"] and summary["6"]["eval/votes"] == 2
