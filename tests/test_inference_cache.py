"""StreamingCache bookkeeping and the eviction policy, on hand-made segments (no model): which tokens survive,
where they move, that their keys are re-rotated by exactly their shift, and what the policy decides."""

from __future__ import annotations

import pytest
import torch

from streaming_vlm.inference.cache import PREVIOUS, QUERY, REPLY, SINK, USER, Keep, StreamingCache
from streaming_vlm.inference.eviction import StreamingPolicy
from streaming_vlm.model.mrope import rotate_keys
from tests.cache_check import check_cache

NL, IM_END, DOTS = 198, 151645, 2503
STRIP = ((NL,), (IM_END,), (DOTS,))
INV_FREQ = 1.0 / (5e6 ** (torch.arange(0, 32, 2).float() / 32))


def _cache(pos_mode="contiguous", layers=2):
    """SINK 4 | PREVIOUS 6 | USER0 (10 tokens, span 5) | REPLY0 'a b ... <im_end>\\n' | USER1 | REPLY1 silent."""
    cache = StreamingCache(INV_FREQ, pos_mode)
    pieces = [(SINK, [1, 2, 3, 4], None, False, None), (PREVIOUS, list(range(10, 16)), None, False, None),
              (USER, [7] * 10, 0, True, 5), (REPLY, [20, 21, DOTS, IM_END, NL], 0, False, None),
              (USER, [7] * 10, 1, True, 5), (REPLY, [DOTS, IM_END, NL], 1, False, None)]
    for kind, ids, second, vision, span in pieces:
        start = cache.next_position
        cache.add_segment(kind, ids, start, start + (span or len(ids)), second, has_vision=vision)
    n = cache.num_tokens
    torch.manual_seed(0)
    for layer in range(layers):
        keys = torch.randn(1, 2, n, 32)
        values = torch.arange(n, dtype=torch.float32).view(1, 1, n, 1).expand(1, 2, n, 32).clone()
        cache.update(keys, values, layer)
    return cache


def _tokens(cache):
    """Original indices of the surviving tokens (values carry them)."""
    return cache.layers[0].values[0, 0, :, 0].long().tolist()


def test_segments_describe_the_layers():
    cache = _cache()
    check_cache(cache)
    assert cache.num_tokens == 38 and cache.next_position == 4 + 6 + 5 + 5 + 5 + 3
    assert cache.seconds() == [0, 1]
    ids = cache.ids_tensor()
    assert ids.dtype == torch.long and ids.tolist() == cache.ids() and len(set(cache.ids())) > 1


@pytest.mark.parametrize("pos_mode", ["contiguous", "native"])
def test_apply_gathers_and_rotates_each_token_by_its_own_shift(pos_mode):
    cache = _cache(pos_mode)
    before_keys = cache.layers[1].keys.clone()
    # drop PREVIOUS tokens 2..4 (middle), drop USER0 whole, fold REPLY0 to its 2 words
    plan = {1: Keep(PREVIOUS, [(0, 2), (4, 6)]), 2: Keep(USER, []), 3: Keep(PREVIOUS, [(0, 2)])}
    removed = cache.apply(plan)
    check_cache(cache)
    assert removed == 2 + 10 + 3
    kept = [0, 1, 2, 3, 4, 5, 8, 9, 20, 21] + list(range(25, 38))
    assert _tokens(cache) == kept
    # shift of each kept token: 2 (text middle) after PREVIOUS[2:4], +5 (USER0 span) after USER0, +3 after REPLY0 tail
    shift = [0] * 6 + [2] * 2 + [7] * 2 + [10] * 13
    if pos_mode == "native":
        shift = [0] * len(kept)
    for j, (orig, s) in enumerate(zip(kept, shift)):
        expected = rotate_keys(before_keys[..., orig:orig + 1, :], -s, INV_FREQ)
        torch.testing.assert_close(cache.layers[1].keys[..., j:j + 1, :], expected)
    kinds = [(s.kind, len(s), s.pos_start, s.pos_end) for s in cache.segments]
    if pos_mode == "contiguous":
        assert kinds == [(SINK, 4, 0, 4), (PREVIOUS, 2, 4, 6), (PREVIOUS, 2, 6, 8), (PREVIOUS, 2, 8, 10),
                         (USER, 10, 10, 15), (REPLY, 3, 15, 18)]
        assert cache.next_position == 18 == 28 - sum([2, 5, 3])
        assert cache.rotations == 3  # one per run of equally moved tokens
    else:
        assert cache.next_position == 28 and cache.rotations == 0
        assert [(s.pos_start, s.pos_end) for s in cache.segments][-2:] == [(20, 25), (25, 28)]


def test_vision_segments_are_all_or_nothing():
    cache = _cache()
    with pytest.raises(ValueError, match="whole"):
        cache.apply({2: Keep(USER, [(0, 5)])})


def _policy(**kw):
    return StreamingPolicy(**{"window_size": 2, "text_sink": 3, "text_sliding_window": 2, "fold_strip": STRIP, **kw})


def test_policy_window_fold_and_text_trim():
    cache = _cache()
    plan = _policy().plan(cache)  # new second coming: keep window_size - 1 = 1 old second
    assert plan[2].ranges == [] and plan[3].kind == PREVIOUS  # second 0's vision goes, its words fold
    assert 4 not in plan or plan[4].ranges == [(0, 10)]  # second 1 stays
    cache.apply(plan)
    check_cache(cache)
    assert cache.seconds() == [1]
    previous = [t for s in cache.segments if s.kind == PREVIOUS for t in s.ids]
    assert previous == [10, 11, 12, 20, 21]  # head 3 of the old text + tail 2 = the folded words "a b"
    # silence folds to nothing: evicting second 1 leaves no trace of its reply
    cache.apply(_policy().plan(cache, new_second=False))
    cache.apply(_policy(window_size=1).plan(cache))
    assert cache.seconds() == [] and all(s.second is None or s.kind == PREVIOUS for s in cache.segments)
    assert DOTS not in cache.ids() and IM_END not in cache.ids()


def test_policy_keeps_the_window_for_a_question():
    cache = _cache()
    assert not any(k.ranges == [] for k in _policy().plan(cache, new_second=False).values())


def test_policy_budget_cap_evicts_inside_the_window():
    cache = _cache()
    policy = _policy(window_size=8, max_cache_tokens=32)
    plan = policy.plan(cache, incoming=10)
    assert plan[2].ranges == [] and 4 not in plan  # 4 sink + 5 text + second 1 (13) + 10 incoming = 32
    cache.apply(plan)
    assert cache.num_tokens + 10 <= 32
    # sink and query are never touched, however small the cap
    cache.segments[0].kind = QUERY
    plan = _policy(window_size=8, max_cache_tokens=1).plan(cache, incoming=10)
    assert 0 not in plan


def test_pieces_are_written_into_the_layers_spare_room(tiny_ckpt, tiny_processor, tmp_path):
    """A second's prefill and its decoded reply are written into the room an eviction left in each layer's
    buffers: one new pair of buffers per layer per second (the compaction), no concatenation of the cache (every
    layer's keys and values stay views of its buffers)."""
    from transformers import Qwen3VLForConditionalGeneration

    from streaming_vlm.data.video import VideoReader
    from streaming_vlm.inference.cache import SpareLayer
    from streaming_vlm.inference.engine import StreamingEngine
    from tests.fixture_video import write_video

    video = write_video(tmp_path / "game.mp4", seconds=6, fps=24, width=160, height=96)
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt).eval().requires_grad_(False)
    engine = StreamingEngine(model, tiny_processor, {"window_size": 2, "text_sink": 8, "text_sliding_window": 12,
                                                     "max_new_tokens": 5, "min_new_tokens": 5, "temperature": 0})

    def storage(t):
        return t.untyped_storage().data_ptr()

    engine.start()
    seconds = VideoReader(video, fps=2.0).seconds(0, 6)
    before = None
    for i, second in enumerate(seconds):
        engine.step(second)
        layers = engine.cache.layers
        assert all(isinstance(layer, SpareLayer) for layer in layers)
        for layer in layers:  # written in place: views of the layer's buffers, not concatenated copies
            assert storage(layer.keys) == storage(layer.buffers[0]) and storage(layer.values) == storage(layer.buffers[1])
        now = [(storage(layer.buffers[0]), storage(layer.buffers[1])) for layer in layers]
        if i >= 2:  # the window is full: every second evicts, into the layer's other buffers (one new pair)
            assert all(a != b for a, b in zip(now, before)), i
        before = now
    assert engine.cache.tokens_evicted > 0
    layer = engine.cache.layers[0]
    assert layer.keys.data_ptr() == layer.buffers[0].data_ptr() and layer.buffers[0].shape[-2] > layer.keys.shape[-2]
    check_cache(engine.cache)
