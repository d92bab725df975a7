"""Decoding on the fixed slot buffers (the CUDA-graph path, run eagerly here) computes what eager decoding on the
streaming cache computes: same logits at every decoded token, same tokens, same cache afterwards, across evictions
(the cache shrinks, so stale keys sit in slots past its end and must stay masked)."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen3VLForConditionalGeneration

from streaming_vlm.data.video import VideoReader
from streaming_vlm.errors import UserError
from streaming_vlm.inference.engine import StreamingEngine
from streaming_vlm.inference.testvideo import write_video


class RecordingEngine(StreamingEngine):
    def _sample(self, logits, context, n_generated, min_new):
        self.seen.append(logits.detach().float().clone())
        return super()._sample(logits, context, n_generated, min_new)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("vid") / "game.mp4", seconds=6, fps=24, width=160, height=96)


def _run(model, processor, video, mode):
    cfg = {"window_size": 2, "text_sink": 8, "text_sliding_window": 12, "temperature": 0, "max_new_tokens": 6,
           "min_new_tokens": 4, "decode_mode": mode}
    engine = RecordingEngine(model, processor, cfg)
    engine.seen = []
    engine.start(previous_text="Earlier: a quiet first half, nil nil.")
    outs = [engine.step(s) for s in VideoReader(video, fps=2.0).seconds(0, 6)]
    return engine, outs


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_slot_decoding_equals_dynamic_decoding(tiny_ckpt, tiny_processor, video, attn):
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt, attn_implementation=attn).eval()
    dyn, dyn_out = _run(model, tiny_processor, video, "dynamic")
    slot, slot_out = _run(model, tiny_processor, video, "slots")
    assert dyn.slots is None and slot.slots is not None and not slot.slots.use_graph
    assert slot.cache.tokens_evicted > 0, "the test must cover evictions"
    assert [o["tokens"] for o in slot_out] == [o["tokens"] for o in dyn_out]
    assert sum(o["tokens"] for o in slot_out) >= 6 * 4
    assert len(slot.seen) == len(dyn.seen)
    diff = max((a - b).abs().max().item() for a, b in zip(slot.seen, dyn.seen))
    assert diff < 1e-4, f"slot vs dynamic decoding: max |Δlogit| = {diff:.2e}"
    assert [o["text"] for o in slot_out] == [o["text"] for o in dyn_out]
    assert slot.cache.ids() == dyn.cache.ids()
    slot.cache.check()
    for a, b in zip(slot.cache.layers, dyn.cache.layers):
        torch.testing.assert_close(a.keys, b.keys, atol=1e-5, rtol=0)
        torch.testing.assert_close(a.values, b.values, atol=1e-5, rtol=0)


def test_slot_masking_is_what_makes_it_exact(tiny_ckpt, tiny_processor, video):
    """With every slot opened (stale keys visible) the logits move: the mask is doing the work above."""
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt).eval()
    engine, _ = _run(model, tiny_processor, video, "slots")
    slots = engine.slots
    slots.load(engine.cache)
    n = slots.base
    assert 0 < n < slots.capacity
    pos = engine.cache.next_position
    good = slots.step(1879, pos).clone()
    slots.load(engine.cache)
    with torch.no_grad():
        for layer in slots.layers:  # stale content past the cache's end, as after an eviction
            layer.keys[:, :, n:].normal_()
            layer.values[:, :, n:].normal_()
    again = slots.step(1879, pos).clone()
    torch.testing.assert_close(again, good, atol=1e-5, rtol=0)  # masked: stale slots change nothing
    slots.load(engine.cache)
    slots.mask.zero_()  # open every slot
    leaked = slots.step(1879, pos)
    assert (leaked - good).abs().max().item() > 1e-3


def test_cuda_graph_mode_needs_cuda(tiny_ckpt, tiny_processor, video):
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt).eval()
    with pytest.raises(UserError, match="CUDA"):
        _run(model, tiny_processor, video, "cuda_graph")
