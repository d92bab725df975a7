"""A reply may end in a token id the model's forward reads as a vision placeholder (an untrained or badly trained
model can sample `<|video_pad|>`). The reply's last token is written by the next second's forward, in front of
that second's frames; it must not be counted as one of them. The stream goes on, on both the fast path and the
reference path."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen3VLForConditionalGeneration

from streaming_vlm.inference.cache import REPLY
from streaming_vlm.inference.engine import StreamingEngine
from streaming_vlm.inference.frames import VideoFrameSource
from tests.fixture_video import write_video
from tests.cache_check import check_cache


@pytest.mark.parametrize("attn", ["sdpa", "eager"])  # sdpa: the fast path (text stack); eager: transformers' forward
def test_a_reply_ending_in_a_placeholder_id_does_not_break_the_next_second(tiny_ckpt, tiny_processor, tmp_path, attn):
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt, attn_implementation=attn).eval()
    model.requires_grad_(False)
    pad = model.config.video_token_id
    # an output head that always prefers the placeholder id
    head = torch.nn.Linear(model.config.text_config.hidden_size, model.config.text_config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[pad] = 50.0
    model.lm_head = head
    video = write_video(tmp_path / "game.mp4", seconds=2, fps=8, width=64, height=64)
    engine = StreamingEngine(model, tiny_processor, {"max_new_tokens": 2, "window_size": 4, "seed": 0})
    engine.start()
    assert engine.plan.fast == (attn == "sdpa")
    segments = list(engine.stream(VideoFrameSource(video, fps=2.0)))
    assert len(segments) == 2
    replies = [s for s in engine.cache.segments if s.kind == REPLY]
    assert len(replies) == 2 and all(s.ids[:2] == [pad, pad] for s in replies)
    check_cache(engine.cache)
