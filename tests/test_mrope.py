"""Our mRoPE positions equal transformers' get_rope_index, and a uniform shift is one key rotation."""

from __future__ import annotations

import numpy as np
import torch
from transformers import Qwen3VLForConditionalGeneration

from streaming_vlm.data.stream_template import Second, StreamTemplate, VisionBudget
from streaming_vlm.model.mrope import (apply_rotation, mrope_positions, position_span, rotate_keys, rotation,
                                       rotation_table)


def _window(processor, start_time=300.0, n=3):
    tpl = StreamTemplate(processor, budget=VisionBudget(min_pixels=32 * 32, max_pixels=160 * 96, total_pixels=10**9))
    rng = np.random.default_rng(1)
    secs = [Second(start_time + i, start_time + i + 1, rng.integers(0, 255, (2, 96, 160, 3), dtype=np.uint8),
                   [start_time + i, start_time + i + 0.5], w) for i, w in enumerate(["kick off", "", "Red pass"])][:n]
    return tpl, tpl.encode_window("Blue scored early.", secs)


def test_positions_match_transformers_get_rope_index(tiny_ckpt, tiny_processor):
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt)
    tpl, enc = _window(tiny_processor)
    ids = enc.input_ids[None]
    kwargs = dict(video_grid_thw=enc.video_grid_thw)
    try:  # transformers >= 5.2x wants the token types
        ref, _ = model.model.get_rope_index(ids, mm_token_type_ids=(ids == tpl.video_token_id).int() * 2, **kwargs)
    except TypeError:
        ref, _ = model.model.get_rope_index(ids, **kwargs)
    assert torch.equal(ref[:, 0], enc.position_ids)
    # vision runs jump by max(h, w)/merge, so the span is shorter than the token count
    assert position_span(enc.position_ids) < len(enc)


def test_start_offset_is_a_uniform_shift(tiny_processor):
    tpl, enc = _window(tiny_processor)
    shifted, nxt = mrope_positions(enc.input_ids, enc.video_grid_thw, video_token_id=tpl.video_token_id,
                                   spatial_merge_size=2, start=1000)
    assert torch.equal(shifted, enc.position_ids + 1000)
    assert nxt == enc.next_position + 1000


def test_rotate_keys_equals_rotating_at_shifted_positions(tiny_ckpt, tiny_processor):
    """Keys rotated at positions p then shifted by delta == keys rotated at p + delta, for text AND vision tokens."""
    from transformers.models.qwen3_vl.modeling_qwen3_vl import apply_rotary_pos_emb

    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt)
    rotary = model.model.language_model.rotary_emb
    _, enc = _window(tiny_processor)
    pos = enc.position_ids[:, None, :]  # (3, 1, L)
    head_dim = model.config.text_config.head_dim
    k = torch.randn(1, 2, pos.shape[-1], head_dim, dtype=torch.float64).float()
    q = torch.zeros_like(k)
    for delta in (-517, -16, 37):
        cos, sin = rotary(k, pos)
        _, k_rot = apply_rotary_pos_emb(q, k, cos, sin)
        cos2, sin2 = rotary(k, pos + delta)
        _, k_direct = apply_rotary_pos_emb(q, k, cos2, sin2)
        k_shifted = rotate_keys(k_rot, delta, rotary.inv_freq)
        assert torch.allclose(k_shifted, k_direct, atol=2e-4), (delta, (k_shifted - k_direct).abs().max())
    # and a non-uniform shift is NOT a single rotation (the test can fail)
    pos_bad = pos.clone()
    pos_bad[1] += 5
    cos3, sin3 = rotary(k, pos_bad)
    _, k_bad = apply_rotary_pos_emb(q, k, cos3, sin3)
    cos, sin = rotary(k, pos)
    _, k_rot = apply_rotary_pos_emb(q, k, cos, sin)
    assert not torch.allclose(rotate_keys(k_rot, 5, rotary.inv_freq), k_bad, atol=1e-3)


def test_rotation_table_is_one_rotation_per_token():
    """The per-token table the cache rotates with gives each token exactly its own shift's rotation, bit for bit,
    and shift 0 leaves a key unchanged."""
    inv_freq = 1.0 / (5_000_000 ** (torch.arange(0, 16, 2).float() / 16))
    deltas = torch.tensor([0, -7, -7, 0, -40, 3])
    cos, sin = rotation_table(deltas, inv_freq, "cpu")
    keys = torch.randn(1, 2, len(deltas), 16).bfloat16()
    together = apply_rotation(keys, cos, sin)
    for i, d in enumerate(deltas.tolist()):
        alone = apply_rotation(keys[..., i:i + 1, :], *rotation(d, inv_freq, "cpu"))
        assert torch.equal(together[..., i:i + 1, :], alone)
    assert torch.equal(together[..., 0, :], keys[..., 0, :]) and not torch.equal(together[..., 1, :], keys[..., 1, :])
