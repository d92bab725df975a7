"""The engine's attention functions, registered with transformers' AttentionInterface and switched in around its
own (unpatched) forwards; and the SDPA kernel choice.

    chunk_attention   a piece appended to the streaming cache (a second's user turn, a reply's tail, one eager
                      decode token): its queries see every cached token and each other causally, which is SDPA's
                      bottom-right causal bias. No mask is built (transformers builds none for an attention name it
                      has no mask function for), so flash attention runs with grouped-query heads; transformers'
                      sdpa path materialises a (q, cache) mask and repeats K/V per query head, which forces the
                      memory-efficient kernel: 1.04 -> 0.33 ms a layer for a 2B second (792 queries over 13.6K keys,
                      H200, BENCHMARKS.md).
    slot_attention    one decode token over the fixed slot buffers (graph_decode.py), with an additive mask over the
                      slots that are open.

Both are used only when the model was loaded with `sdpa`; `eager` and `flash_attention_2` keep transformers' own.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right
from transformers import AttentionInterface

CHUNK_ATTENTION = "streaming_chunk_attention"
SLOT_ATTENTION = "streaming_slot_attention"

SDPA_KERNELS = {"efficient": [SDPBackend.EFFICIENT_ATTENTION], "flash": [SDPBackend.FLASH_ATTENTION],
                "cudnn": [SDPBackend.CUDNN_ATTENTION], "math": [SDPBackend.MATH]}


def chunk_attention(module, query, key, value, attention_mask=None, dropout: float = 0.0,
                    scaling: float | None = None, **kwargs):
    """(B, Hq, q, D) queries of the newest q cached tokens over all (B, Hkv, k, D) cached keys/values, causal from
    the bottom right. Returns (B, q, Hq, D), as transformers' attention functions do."""
    if attention_mask is not None:
        raise ValueError("chunk_attention builds its own causal bias; got an explicit attention mask")
    bias = causal_lower_right(query.shape[-2], key.shape[-2])
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=dropout,
                                                           scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def slot_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                   **kwargs):
    """(B, Hq, q, D) queries over (B, Hkv, C, D) slot keys/values with an additive (B|1, 1, q, C) mask: SDPA with
    grouped-query heads (no repeated K/V). Returns (B, q, Hq, D), as transformers' attention functions do."""
    mask = None if attention_mask is None else attention_mask[..., -key.shape[-2]:].to(query.dtype)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling,
                                                           enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(CHUNK_ATTENTION, chunk_attention)
AttentionInterface.register(SLOT_ATTENTION, slot_attention)


@contextmanager
def attention_implementation(config, name: str | None):
    """Run a text stack with another registered attention function (None: leave it); restored after. Set on the
    instance, not through the setter, which would also rewrite sub-configs."""
    if name is None:
        yield
        return
    saved = config._attn_implementation_internal
    config._attn_implementation_internal = name
    try:
        yield
    finally:
        config._attn_implementation_internal = saved


def streaming_attention_name(config) -> str | None:
    """The attention function for the engine's forwards on the cache: ours for an sdpa model, else the model's."""
    return CHUNK_ATTENTION if config._attn_implementation == "sdpa" else None


@contextmanager
def sdpa_backend(name: str, device: torch.device):
    """SDPA's kernels for the engine's eager forwards (vision, prefill, eager decode; the slot decode step is
    captured once, under torch's choice). "auto" / "default": torch's choice. On an H200 that is cuDNN for the
    vision tower's full attention (one shape per frame grid, so one plan: 88 us a block vs flash 156, memory-
    efficient 332) and, through the bottom-right causal bias, flash for the text chunks; cuDNN would build a plan
    for every new cache length. A kernel name: that kernel, math as fallback.

    Only the enabled set is changed, never SDPA's priority order: after a context that set it (set_priority=True),
    torch 2.11 on the H200 ran the slot step's masked single-query attention on the memory-efficient kernel
    instead of cuDNN (0.42 vs 0.024 ms a layer; a 2B step 10.9 ms instead of ~5)."""
    if name in ("auto", "default"):
        yield
        return
    with sdpa_kernel(SDPA_KERNELS[name] + [SDPBackend.MATH]):
        yield
