"""A checkpoint as the hub ships it (`tiny --hub-like`): the real Qwen3-VL Instruct chat template's behaviour and the
hub's sampling defaults, on the tiny weights.

- the fixture's template behaves as the issue states the real one does (so the tests below meet the real problem);
- the stream template gives the same tokens, labels and positions on it as on the tiny ChatML checkpoint, previous
  text included, at both granularities (window; prefix + second + reply);
- the engine's sampling settings win over the checkpoint's generation_config: same weights, same engine settings,
  same text whatever generation_config.json says.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from streaming_vlm.data.stream_template import PREVIOUS_ROLE, Second, StreamTemplate


@pytest.fixture(scope="session")
def hub_like_processor(hub_like_ckpt):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(hub_like_ckpt)


def test_the_fixture_renders_like_the_real_template(hub_like_ckpt, hub_like_processor):
    from transformers import AutoTokenizer

    from streaming_vlm.model.tiny import HUB_LIKE_CHAT_TEMPLATE

    assert AutoTokenizer.from_pretrained(hub_like_ckpt).chat_template == HUB_LIKE_CHAT_TEMPLATE
    render = lambda msgs, **kw: hub_like_processor.apply_chat_template(msgs, tokenize=False, **kw)  # noqa: E731
    msgs = [{"role": "system", "content": "S"}, {"role": PREVIOUS_ROLE, "content": "EARLIER WORDS"},
            {"role": "user", "content": [{"type": "text", "text": "Time=0.0-1.0s"}, {"type": "video"}]},
            {"role": "assistant", "content": "goal ..."}, {"role": "system", "content": "LATE SYSTEM"}]
    text = render(msgs, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nS<|im_end|>\n"
                    "<|im_start|>user\nTime=0.0-1.0s<|vision_start|><|video_pad|><|vision_end|><|im_end|>\n"
                    "<|im_start|>assistant\ngoal ...<|im_end|>\n<|im_start|>assistant\n")  # custom role, late system: gone
    assert render([{"role": "user", "content": "hi"}]) == "<|im_start|>user\nhi<|im_end|>\n"  # no default system
    tools = [{"type": "function", "function": {"name": "score", "parameters": {}}}]
    with_tools = render([{"role": "user", "content": "hi"}, {"role": "tool", "content": "2-1"}], tools=tools)
    assert with_tools.startswith("<|im_start|>system\n# Tools") and '"name": "score"' in with_tools
    assert "<tool_response>\n2-1\n</tool_response>" in with_tools
    generation = json.loads((hub_like_ckpt / "generation_config.json").read_text())
    assert (generation["do_sample"], generation["temperature"], generation["top_p"], generation["top_k"]) == \
           (True, 0.7, 0.8, 20)


def _second(t, text=None, seed=0):
    rng = np.random.default_rng(seed + int(t))
    return Second(float(t), float(t + 1), rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8),
                  [t + 0.25, t + 0.75], text)


def _same(a, b):
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
    assert torch.equal(a.position_ids, b.position_ids) and a.next_position == b.next_position
    assert (a.pixel_values_videos is None) == (b.pixel_values_videos is None)
    if a.pixel_values_videos is not None:
        assert torch.equal(a.pixel_values_videos, b.pixel_values_videos)
        assert torch.equal(a.video_grid_thw, b.video_grid_thw)


def test_stream_template_gives_the_same_tokens_on_hub_like_and_tiny(hub_like_processor, tiny_processor):
    hub, tiny = StreamTemplate(hub_like_processor), StreamTemplate(tiny_processor)
    previous = "Red passes wide and the keeper claims it"
    seconds = [_second(100, "a long ball"), _second(101, ""), _second(102, "shot saved")]
    window = hub.encode_window(previous, seconds)
    _same(window, tiny.encode_window(previous, seconds))
    text = hub.tokenizer.decode(window.input_ids)
    assert f"<|im_start|>{PREVIOUS_ROLE}\n{previous}<|im_end|>\n" in text  # the hub template would have dropped it
    assert "<100.5 seconds>" in text and "Time=100.0-101.0s" in text
    # the engine's pieces: prefix, then per second the user turn and the reply, laid end to end = the window
    prefix = hub.encode_prefix(previous)
    _same(prefix, tiny.encode_prefix(previous))
    ids, pos = [prefix.input_ids], prefix.next_position
    for s in seconds:
        user = hub.encode_second(s, pos)
        _same(user, tiny.encode_second(s, pos))
        reply = hub.encode_reply(f"{s.text} ..." if s.text else " ...", user.next_position)
        ids += [user.input_ids, reply.input_ids]
        pos = reply.next_position
    assert torch.equal(torch.cat(ids), window.input_ids) and pos == window.next_position


def test_engine_sampling_settings_win_over_generation_config(hub_like_ckpt, tiny_ckpt, tmp_path):
    """Same weights (seed 0) under both checkpoints; the hub-like one's generation_config asks for top-k 20 /
    top-p 0.8 sampling at 0.7. The engine samples with its own settings only: greedy gives the argmax text on both,
    and a seeded temperature-1.5 run gives the same text on both (and differs from greedy: it really samples)."""
    from streaming_vlm.inference import run_stream
    from tests.fixture_video import write_video
    from streaming_vlm.model.loading import load_model, load_processor

    video = write_video(tmp_path / "v.mp4", seconds=3, fps=8)
    runs = {}
    for name, ckpt in (("hub", hub_like_ckpt), ("tiny", tiny_ckpt)):
        model, processor = load_model(ckpt, device="cpu"), load_processor(ckpt)
        assert bool(model.generation_config.do_sample) is (name == "hub")
        for temperature in (0.0, 1.5):
            config = {"temperature": temperature, "seed": 3, "max_new_tokens": 6, "window_size": 2,
                      "repetition_penalty": 1.0, "progress": False, "min_pixels": 4096, "max_pixels": 4096}
            runs[name, temperature] = [s["text"] for s in run_stream(model, processor, video, config)]
    assert runs["hub", 0.0] == runs["tiny", 0.0]
    assert runs["hub", 1.5] == runs["tiny", 1.5]
    assert runs["hub", 1.5] != runs["hub", 0.0]
