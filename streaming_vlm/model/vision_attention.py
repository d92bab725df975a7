"""The vision tower's attention within frames: one SDPA call per block, registered with transformers' attention interface.

Qwen3-VL's vision blocks attend within each temporal patch group: the packed sequence of a forward's patches is cut
into segments by `cu_seqlens`. With `sdpa`, transformers splits q/k/v by the segments' lengths (a `.tolist()` host
sync in every block) and calls SDPA once per segment: 24 blocks x 24 calls for a 24-s training window at 2 fps, each
a small kernel, and a graph break for torch.compile. Only implementations whose name contains "flash"
(`is_flash_attention_requested`) get the whole packed sequence with `cu_seqlens` and `max_seqlen` instead, so this one
is registered under such a name, `SEGMENT_ATTENTION`, and runs torch's own kernels:

    equal segments   (a stream's frames keep one size: every training window of one video, every CLI second)
                     the packed sequence viewed as a batch of segments, one SDPA call; no host sync, one graph
    unequal segments on CUDA in bf16/fp16: torch's variable-length flash kernel (`torch.nn.attention.varlen`)
                     elsewhere (fp32, CPU): SDPA per segment, as transformers' `sdpa` does

Contract: the output equals transformers' `sdpa` per-segment attention within float tolerance
(tests/test_vision_attention.py). `use_segment_attention` switches a loaded model's vision tower to it where the tower
runs `sdpa`; the choice lives only on the in-memory config (`_attn_implementation` is not saved with a checkpoint).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

SEGMENT_ATTENTION = "sdpa_flash_segments"  # "flash" in the name: transformers then passes cu_seqlens (see above)


def _varlen_kernel():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:  # older torch: per-segment SDPA
        return None
    return varlen_attn


def segment_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, cu_seq_lens_q=None,
                      max_length_q=None, **kwargs):
    """q/k/v (1, heads, tokens, head_dim), segments `cu_seq_lens_q` (n + 1,); returns ((1, tokens, heads, head_dim),
    None), the layout transformers' attention functions return."""
    if attention_mask is not None or cu_seq_lens_q is None or query.shape[0] != 1:
        raise ValueError(f"{SEGMENT_ATTENTION} serves the vision tower's packed segments (batch 1, cu_seqlens, no mask)")
    _, heads, tokens, dim = query.shape
    segments = cu_seq_lens_q.shape[0] - 1
    if max_length_q is not None and segments * int(max_length_q) == tokens:  # all segments have the longest's length
        length = int(max_length_q)

        def batched(x):  # (1, heads, n * length, dim) -> (n, heads, length, dim), a view
            return x[0].view(heads, segments, length, dim).transpose(0, 1)

        out = F.scaled_dot_product_attention(batched(query), batched(key), batched(value), dropout_p=dropout,
                                             scale=scaling)  # (n, heads, length, dim)
        return out.permute(0, 2, 1, 3).reshape(1, tokens, heads, dim), None
    varlen = _varlen_kernel() if query.is_cuda and query.dtype in (torch.float16, torch.bfloat16) else None
    if varlen is not None:
        cu = cu_seq_lens_q.to(device=query.device, dtype=torch.int32)
        longest = int(max_length_q) if max_length_q is not None else int((cu[1:] - cu[:-1]).max())
        out = varlen(*(x[0].transpose(0, 1) for x in (query, key, value)), cu, cu, longest, longest, scale=scaling)
        return out.unsqueeze(0), None  # (tokens, heads, dim) -> (1, tokens, heads, dim)
    lengths = (cu_seq_lens_q[1:] - cu_seq_lens_q[:-1]).tolist()
    outs = [F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling)
            for q, k, v in zip(*(torch.split(x, lengths, dim=2) for x in (query, key, value)))]
    return torch.cat(outs, dim=2).transpose(1, 2), None


AttentionInterface.register(SEGMENT_ATTENTION, segment_attention)


VISION_ATTENTION = ("segments", "transformers")  # training's `model.vision_attention`; the CLI always takes segments


def use_segment_attention(model) -> bool:
    """Switch the vision tower of a loaded `Qwen3VLForConditionalGeneration` (before any peft wrapping) from `sdpa` to `SEGMENT_ATTENTION`; returns whether it did.
    Towers on flash-attn (already one varlen kernel) or eager (the reference) are left as they are."""
    visual = model.model.visual
    if visual.config._attn_implementation != "sdpa":
        return False
    visual.config._attn_implementation = SEGMENT_ATTENTION
    return True
