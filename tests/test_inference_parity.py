"""The streaming path computes what one plain transformers forward computes.

1. No eviction: prefix + per-second user turns (with real decoded frames) + teacher-forced replies, fed piece by
   piece through `StreamingEngine` and `StreamingCache`, give the same logits at every token as ONE forward of the
   same conversation through unpatched transformers (`model(**processor(...))`, positions from its own
   `get_rope_index`), for sdpa and eager. fp32, tolerance 1e-4 absolute on logits of magnitude ~1.
2. After evictions: with a 1-layer model (its cached K/V depend only on each token and its position, so keeping
   them without recompute is exact), the logits of a new second equal a from-scratch forward over exactly the
   retained tokens (retained ids + retained seconds' pixels) at the cache's positions; in contiguous mode those
   positions are checked to be `mrope_positions(retained ids, start=0)`: contiguous from 0, bounded.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import Qwen3VLForConditionalGeneration
from transformers.video_utils import VideoMetadata

from streaming_vlm.data.stream_template import Second
from streaming_vlm.data.video import VideoReader
from streaming_vlm.inference.cache import REPLY, USER
from streaming_vlm.inference.engine import StreamingEngine
from tests.fixture_video import write_video
from streaming_vlm.model.mrope import mrope_positions
from streaming_vlm.model.tiny import build_config
from tests.cache_check import check_cache

TOL = 1e-4
WORDS = ["Kick off in the rain", "", "Long ball forward", "", "Shot! Wide of the post", "Corner to the blues",
         "", "Header cleared"]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("vid") / "game.mp4", seconds=8, fps=24, width=160, height=96)


def _seconds(video, n, fps=2.0, with_text=True):
    seconds = VideoReader(video, fps=fps).seconds(0, n)
    if with_text:
        for s, w in zip(seconds, WORDS):
            s.text = w
    return seconds


def _full_forward(model, processor, template, previous, seconds):
    """One unpatched forward of the whole conversation, straight from the processor."""
    messages = template.prefix_messages(previous, None)
    for s in seconds:
        messages += template.second_messages(s)
    text = processor.apply_chat_template(messages, tokenize=False)
    n_frames = sum(len(s.frames) for s in seconds)
    lo, hi = template.budget.per_frame(n_frames)
    per_video = max(2, math.ceil(max(len(s.frames) for s in seconds) / 2) * 2)
    inputs = processor(text=[text], videos=[s.frames for s in seconds],
                       video_metadata=[VideoMetadata(total_num_frames=len(s.frames), fps=1.0,
                                                     frames_indices=list(s.frame_times)) for s in seconds],
                       return_tensors="pt", do_sample_frames=False,
                       size={"shortest_edge": lo * per_video, "longest_edge": hi * per_video})
    with torch.no_grad():
        return inputs, model(**inputs).logits[0]


@pytest.mark.parametrize("attn", ["sdpa", "eager", "text_step"])
def test_no_eviction_logits_equal_one_full_forward(tiny_ckpt, tiny_processor, video, attn):
    """sdpa / eager: a trainable model, through transformers' forward; text_step: an sdpa model nothing trains
    (what load_model returns), through our text stack (model/text_step.py)."""
    impl = "sdpa" if attn == "text_step" else attn
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt, attn_implementation=impl).eval()
    if attn == "text_step":
        model.requires_grad_(False)
    seconds = _seconds(video, 4)
    previous = "Earlier: a quiet first half, nil nil."
    engine = StreamingEngine(model, tiny_processor, {"window_size": 8, "temperature": 0})
    engine.start(previous_text=previous)
    assert engine.plan.fast == (engine.text_step is not None) == (attn == "text_step")
    n_prefix = engine.cache.num_tokens
    ids, chunks = engine.cache.ids(), []
    for i, s in enumerate(seconds):
        enc = engine.template.encode_second(s, start=engine.cache.next_position)
        chunks.append(engine.feed(enc, USER, i, all_logits=True))
        reply = engine.template.encode_reply(f"{s.text} ..." if s.text else " ...",
                                             start=engine.cache.next_position)
        chunks.append(engine.feed(reply, REPLY, i, all_logits=True))
        ids += enc.input_ids.tolist() + reply.input_ids.tolist()
    check_cache(engine.cache)
    streamed = torch.cat(chunks)

    inputs, full = _full_forward(model, tiny_processor, engine.template, previous, seconds)
    assert ids == inputs["input_ids"][0].tolist(), "streamed tokens differ from the processor's"
    assert engine.cache.num_tokens == len(ids) and engine.cache.next_position > 0
    assert (torch.tensor(ids) == model.config.video_token_id).sum() > 4 * 20  # every second carries vision
    diff = (streamed - full[n_prefix:]).abs().max().item()
    assert diff < TOL, f"streaming vs full forward: max |Δlogit| = {diff:.2e}"

    if attn != "eager":
        # DeepStack is live in this comparison: without it the full forward's logits move far beyond TOL, so a
        # streaming path that dropped DeepStack on later seconds could not have matched.
        for merger in model.model.visual.deepstack_merger_list:
            torch.nn.init.zeros_(merger.linear_fc2.weight)
            torch.nn.init.zeros_(merger.linear_fc2.bias)
        _, no_deepstack = _full_forward(model, tiny_processor, engine.template, previous, seconds)
        assert (no_deepstack[n_prefix:] - full[n_prefix:]).abs().max().item() > 100 * TOL


def _one_layer_model(seed=0, trainable=True):
    config = build_config("tiny")
    config.text_config.num_hidden_layers = 1
    torch.manual_seed(seed)
    return Qwen3VLForConditionalGeneration(config).eval().requires_grad_(trainable)


def _reference_positions(cache, encodings):
    """Each retained token's position as the cache says: text runs are consecutive, a vision second keeps its
    grid shape, moved to the segment's current start."""
    rows = []
    for seg in cache.segments:
        if seg.has_vision:
            enc = encodings[seg.second]
            rows.append(enc.position_ids - int(enc.position_ids.min()) + seg.pos_start)
        else:
            rows.append(torch.arange(seg.pos_start, seg.pos_end).expand(3, -1))
    return torch.cat(rows, dim=1)


@pytest.mark.parametrize("pos_mode,trainable", [("contiguous", True), ("native", True), ("contiguous", False)])
def test_after_eviction_logits_equal_forward_over_retained_tokens(tiny_processor, video, pos_mode, trainable):
    model = _one_layer_model(trainable=trainable)
    cfg = {"window_size": 2, "text_sink": 6, "text_sliding_window": 5, "temperature": 0, "pos_mode": pos_mode}
    engine = StreamingEngine(model, tiny_processor, cfg)
    engine.start(previous_text="Earlier: a quiet first half, nil nil, few chances for either side.")
    assert (engine.text_step is None) == trainable
    seconds = _seconds(video, 8)
    encodings = {}
    for i, s in enumerate(seconds[:-1]):
        engine.step(Second(s.start, s.end, s.frames, s.frame_times), reply=s.text)
        encodings[i] = engine.template.encode_second(s, start=0)  # pixels + grid-shaped positions
    last = len(seconds) - 1
    engine.evict()
    cache = engine.cache
    check_cache(cache)
    retained = cache.seconds()
    assert retained == [last - 1], "window_size 2: one old second stays beside the new one"
    assert cache.tokens_evicted > 0 and sum(len(g) for g in cache.segments if g.kind == "previous") == 6 + 5

    enc = engine.template.encode_second(seconds[-1], start=cache.next_position)
    encodings[last] = enc
    ref_ids = cache.ids() + enc.input_ids.tolist()
    ref_pos = torch.cat([_reference_positions(cache, encodings), enc.position_ids], dim=1)
    if pos_mode == "contiguous":
        grids = torch.cat([encodings[s].video_grid_thw for s in retained + [last]])
        independent, end = mrope_positions(torch.tensor(ref_ids), grids, video_token_id=model.config.video_token_id,
                                           spatial_merge_size=2, start=0)
        assert torch.equal(ref_pos, independent), "retained positions are not contiguous from 0"
        assert end == enc.next_position
    else:
        assert enc.next_position > len(ref_ids), "native positions keep the evicted gaps"
    streamed = engine.feed(enc, USER, last, all_logits=True)

    pixels = torch.cat([encodings[s].pixel_values_videos for s in retained + [last]])
    grids = torch.cat([encodings[s].video_grid_thw for s in retained + [last]])
    with torch.no_grad():
        full = model(input_ids=torch.tensor([ref_ids]), position_ids=ref_pos[:, None, :],
                     pixel_values_videos=pixels, video_grid_thw=grids).logits[0]
    diff = (streamed - full[-len(enc):]).abs().max().item()
    assert diff < TOL, f"after eviction ({pos_mode}): max |Δlogit| = {diff:.2e}"

    # The shift matters: the same tokens at the positions they had before eviction give other logits.
    if pos_mode == "contiguous":
        with torch.no_grad():
            shifted = model(input_ids=torch.tensor([ref_ids]), position_ids=(ref_pos + 37)[:, None, :].clone(),
                            pixel_values_videos=pixels, video_grid_thw=grids).logits[0]
        stale = ref_pos.clone()
        stale[:, :6] -= 37  # sink left where it was, the rest not moved down: a missing rotation
        with torch.no_grad():
            wrong = model(input_ids=torch.tensor([ref_ids]), position_ids=stale[:, None, :],
                          pixel_values_videos=pixels, video_grid_thw=grids).logits[0]
        assert (shifted[-len(enc):] - full[-len(enc):]).abs().max() < TOL  # RoPE is relative: a global shift is free
        assert (wrong[-len(enc):] - full[-len(enc):]).abs().max() > 100 * TOL  # a partial one is not


@pytest.mark.parametrize("window", [2, 1])
def test_generated_reply_tail_is_written_by_the_next_forward(tiny_processor, video, window):
    """A generated reply's tail (its last token at max_new_tokens, <|im_end|>, "\\n") gets no forward of its own:
    it is written in front of the next piece. The next second's logits still equal a from-scratch forward over the
    retained tokens, including when eviction folds that reply at once (window 1: its closing tokens are dropped
    before they were ever written)."""
    model = _one_layer_model(seed=1)
    cfg = {"window_size": window, "text_sink": 6, "text_sliding_window": 30, "temperature": 0,
           "max_new_tokens": 5, "min_new_tokens": 5}
    engine = StreamingEngine(model, tiny_processor, cfg)
    engine.start(previous_text="Earlier: a quiet first half.")
    calls = []
    hook = model.register_forward_pre_hook(lambda *_: calls.append(1))
    seconds = _seconds(video, 6, with_text=False)
    encodings = {}
    for i, s in enumerate(seconds[:-1]):
        out = engine.step(s)
        encodings[i] = engine.template.encode_second(s, start=0)
        assert out["tokens"] == 5 + 2
    hook.remove()
    assert len(calls) == 5 * (1 + 4), "one prefill + max_new - 1 decode forwards a second"
    cache = engine.cache
    assert len(cache.unwritten) == 3 and cache.get_seq_length() == cache.num_tokens - 3
    check_cache(cache)

    last = len(seconds) - 1
    engine.evict()
    check_cache(cache)
    assert len(cache.unwritten) == (1 if window == 1 else 3)  # folded at once: only the word survives
    assert cache.tokens_evicted > 0
    retained = cache.seconds()
    enc = engine.template.encode_second(seconds[-1], start=cache.next_position)
    encodings[last] = enc
    ref_ids = cache.ids() + enc.input_ids.tolist()
    ref_pos = torch.cat([_reference_positions(cache, encodings), enc.position_ids], dim=1)
    streamed = engine.feed(enc, USER, last, all_logits=True)
    assert cache.unwritten == [] and cache.get_seq_length() == cache.num_tokens == len(ref_ids)
    check_cache(cache)

    pixels = torch.cat([encodings[s].pixel_values_videos for s in retained + [last]])
    grids = torch.cat([encodings[s].video_grid_thw for s in retained + [last]])
    with torch.no_grad():
        full = model(input_ids=torch.tensor([ref_ids]), position_ids=ref_pos[:, None, :],
                     pixel_values_videos=pixels, video_grid_thw=grids).logits[0]
    assert streamed.shape[0] == len(enc)
    diff = (streamed - full[-len(enc):]).abs().max().item()
    assert diff < TOL, f"unwritten tail (window {window}): max |Δlogit| = {diff:.2e}"


@pytest.mark.parametrize("q_len,k_len", [(1, 7), (5, 9), (6, 6)])
def test_chunk_attention_is_bottom_right_causal(q_len, k_len):
    """A new piece's queries see every cached key and each other causally: the text stack's chunk_attention
    (over unrepeated grouped-query K/V) equals attention with that mask written out."""
    from streaming_vlm.model.text_step import chunk_attention

    g = torch.Generator().manual_seed(q_len * 31 + k_len)
    q = torch.randn(1, 4, q_len, 8, generator=g)
    k, v = torch.randn(1, 2, k_len, 8, generator=g), torch.randn(1, 2, k_len, 8, generator=g)
    allowed = torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len)
    scores = q @ k.repeat_interleave(2, 1).transpose(-1, -2) / math.sqrt(8)
    want = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1) @ v.repeat_interleave(2, 1)
    got, _ = chunk_attention(None, q, k, v, None)
    torch.testing.assert_close(got, want.transpose(1, 2).reshape(1, q_len, -1), atol=1e-5, rtol=0)
    shifted, _ = chunk_attention(None, q, k, v, None, scaling=0.5)  # the layer's scaling is used, not 1/sqrt(D)
    assert (shifted - got).abs().max() > 1e-3
