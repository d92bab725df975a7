"""Contiguous RoPE's core claim: moving every cached token by the same Δ is ONE rotation of its cached keys.

Keys come out of Qwen3-VL's own rotary embedding (interleaved mRoPE, the tiny sections 6/5/5 and the real 24/20/20)
at positions p; `rotate_keys(k_p, Δ)` must equal the keys computed directly at p + Δ, for text tokens (t = h = w)
and for vision tokens (t, h, w differ). A shift that is NOT uniform over t/h/w (only t moves) must not equal it:
that is why the claim needs the uniform shift.

Tolerance: the model computes angles in fp32, so any two RoPE computations at position P differ by ~P·2⁻²⁴ rad;
positions here stay below 4096 (atol 1e-3; a wrong rotation errs by ~1). Bounded positions are also what keeps
this error small over an endless stream (native positions after 2 h at ~150 positions/s reach ~10⁶: ~0.06 rad).
"""

from __future__ import annotations

import pytest
import torch
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding, apply_rotary_pos_emb

from streaming_vlm.model.mrope import rotate_keys
from streaming_vlm.model.tiny import build_config


def _rotated(rope, k, positions):
    cos, sin = rope(k, positions[:, None, :])  # (3, 1, L) -> (1, L, D)
    _, out = apply_rotary_pos_emb(k, k, cos, sin)
    return out


def _positions(kind, n, start):
    if kind == "text":
        return torch.arange(start, start + n).expand(3, -1).clone()
    side = int(n ** 0.5)
    hh, ww = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return torch.stack([torch.zeros(side * side, dtype=torch.long), hh.reshape(-1), ww.reshape(-1)]) + start


@pytest.mark.parametrize("size", ["tiny", "2b"])
@pytest.mark.parametrize("kind", ["text", "vision"])
@pytest.mark.parametrize("delta", [-1, -337, -900, 3_000])
def test_uniform_shift_is_one_rotation(size, kind, delta):
    config = build_config(size).text_config
    rope = Qwen3VLTextRotaryEmbedding(config)
    torch.manual_seed(0)
    k = torch.randn(1, 2, 64, config.head_dim, dtype=torch.float64).float()
    p = _positions(kind, 64, start=1_000)
    at_p = _rotated(rope, k, p)
    direct = _rotated(rope, k, p + delta)
    moved = rotate_keys(at_p, delta, rope.inv_freq)
    # The model's own fp32 angles (position × inv_freq) are only good to ~position·2⁻²⁴ rad, so at positions
    # up to 4000 the two computations agree to ~1e-3; a wrong rotation is off by O(1).
    torch.testing.assert_close(moved, direct, atol=1e-3, rtol=0)
    assert (moved - at_p).abs().max() > 1e-2  # it did move


def test_non_uniform_shift_is_not_one_rotation():
    config = build_config("tiny").text_config
    rope = Qwen3VLTextRotaryEmbedding(config)
    k = torch.randn(1, 2, 16, config.head_dim)
    p = _positions("vision", 16, start=100)
    t_only = p.clone()
    t_only[0] += 7
    direct = _rotated(rope, k, t_only)
    moved = rotate_keys(_rotated(rope, k, p), 7, rope.inv_freq)
    assert (moved - direct).abs().max() > 1e-2
