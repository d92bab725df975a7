"""Our text stack (model/text_step.py) is transformers' Qwen3-VL text stack: its RMSNorm bit for bit, and, compiled
(the CUDA plan's prefill layer and decode step), the same logits, tokens and cache as eager, with one
compilation for every piece length."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen3VLForConditionalGeneration

from streaming_vlm.data.video import VideoReader
from streaming_vlm.inference.engine import Plan
from streaming_vlm.model.text_step import rms_norm, text_step_for
from tests.fixture_video import write_video
from tests.score_trace import TracingEngine


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("vid") / "game.mp4", seconds=6, fps=24, width=160, height=96)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_is_the_models(tiny_ckpt, dtype):
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt, dtype=dtype)
    norm = model.model.language_model.layers[0].input_layernorm
    with torch.no_grad():
        norm.weight.normal_()
        x = torch.randn(1, 7, norm.weight.shape[0], dtype=dtype) * 3
        assert torch.equal(rms_norm(x, norm.weight, norm.variance_epsilon), norm(x))


def test_text_step_only_for_a_model_nothing_trains(tiny_ckpt):
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt).eval()
    assert text_step_for(model.model.language_model) is None
    model.requires_grad_(False)
    step = text_step_for(model.model.language_model)
    assert step is not None and text_step_for(model.model.language_model) is step


def test_compiled_prefill_and_eviction_stream_as_eager(tiny_ckpt, tiny_processor, video, monkeypatch):
    """Compiled, the warm-up and every second's piece run through the compiled layer (`TextStep.stack`), with
    the eager stream's logits, text and cache; a second stream compiles nothing more (under the
    `fail_on_recompile` stance any compilation raises), whatever the piece length or eviction."""
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt).eval().requires_grad_(False)
    step = text_step_for(model.model.language_model)
    stacked = []  # the pieces that ran the compiled layer
    stack = step.stack
    monkeypatch.setattr(step, "stack", lambda *a, **k: (stacked.append(1), stack(*a, **k))[1])
    runs = {}
    for compiled in (False, True, "again"):
        cfg = {"window_size": 2, "text_sink": 8, "text_sliding_window": 12, "temperature": 0, "max_new_tokens": 5,
               "min_new_tokens": 3}
        engine = TracingEngine(model, tiny_processor, cfg, plan=Plan(fast=True, compiled=bool(compiled)))
        stacked.clear()
        with torch.compiler.set_stance("fail_on_recompile" if compiled == "again" else "default"):
            engine.start(previous_text="Earlier: a quiet first half, nil nil.")
            outs = list(engine.stream(VideoReader(video, fps=2.0).seconds(0, 6)))
        runs[compiled] = (engine, outs, len(stacked))
    (eager, eager_out, eager_stacked), (comp, comp_out, comp_stacked) = runs[False], runs[True]
    assert eager_stacked == 0 and comp.cache.tokens_evicted > 0
    assert comp_stacked == 1 + 6, "the warm-up and every second's piece go through the compiled layer"
    assert runs["again"][2] == 1 + 6 and [o["text"] for o in runs["again"][1]] == [o["text"] for o in comp_out]
    assert [o["text"] for o in comp_out] == [o["text"] for o in eager_out]
    diff = max((a - b).abs().max().item() for a, b in zip(comp.score_trace, eager.score_trace))
    assert diff < 1e-4, f"compiled vs eager prefill: max |Δlogit| = {diff:.2e}"
    assert comp.cache.ids() == eager.cache.ids()
    for a, b in zip(comp.cache.layers, eager.cache.layers):
        torch.testing.assert_close(a.keys, b.keys, atol=1e-5, rtol=0)
        torch.testing.assert_close(a.values, b.values, atol=1e-5, rtol=0)


@pytest.mark.parametrize("fps", [2.0, 4.0])  # one and two temporal patches a second
def test_the_first_stream_compiles_nothing_after_start(tiny_ckpt, tiny_processor, video, fps):
    """`start()` compiles what the compiled plan runs (the decode step, the prefill's layer, the vision blocks, each
    for every size), so no compilation falls in a stream second: the first stream runs under `fail_on_recompile`.
    The model as the CLI loads it (the vision tower on the segment attention); Dynamo's caches emptied first, so
    graphs another test compiled cannot stand in for the warm-up. Each of the three compiled functions is traced
    once at start (Dynamo's trace is what a warm start pays again): one graph each, none traced twice (a restarted
    trace goes through AOTAutograd again; a second warm-up size would add a graph)."""
    from torch._dynamo.utils import counters

    from streaming_vlm.model.vision_attention import use_segment_attention

    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt).eval().requires_grad_(False)
    assert use_segment_attention(model)
    torch._dynamo.reset()
    cfg = {"window_size": 2, "text_sink": 8, "text_sliding_window": 12, "temperature": 0, "max_new_tokens": 5,
           "min_new_tokens": 3, "fps": fps}
    engine = TracingEngine(model, tiny_processor, cfg, plan=Plan(fast=True, compiled=True))
    counters.clear()
    engine.start(previous_text="Earlier: a quiet first half, nil nil.")
    assert counters["stats"]["unique_graphs"] == 3, dict(counters["stats"])
    assert counters["aot_autograd"]["total"] == 3, dict(counters["aot_autograd"])
    with torch.compiler.set_stance("fail_on_recompile"):
        outs = list(engine.stream(VideoReader(video, fps=fps).seconds(0, 6)))
    assert len(outs) == 6 and engine.cache.tokens_evicted > 0
