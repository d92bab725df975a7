"""Qwen3-VL 3-D (t, h, w) rotary positions, computed by us so streaming can place pieces anywhere.

Qwen3-VL splits every video into temporal patches (the processor stamps each with `<t seconds>`), so each run of
`<|video_pad|>` tokens is one (1, h, w) grid. Text advances all three axes by 1 per token. A vision run starting at
position p gets t = p and (h, w) = p + grid offsets; the next token starts at p + max(h, w) / merge.

This matches `Qwen3VLModel.get_rope_index` (checked in tests) but takes a start offset, which is what lets the
streaming cache hand out contiguous positions to each new second, and works the same on transformers 5.17 and 5.23.

Because a text token sits at the same position on all three axes and a vision token's axes move together under a
uniform shift, shifting every retained token by Δ rotates each rotary frequency by Δ·inv_freq regardless of axis:
the cached keys can be re-rotated once per eviction with a plain 1-D rotation (`rotate_keys`).
"""

from __future__ import annotations

import torch


def mrope_positions(
    input_ids: torch.Tensor,
    video_grid_thw: torch.Tensor | None,
    *,
    video_token_id: int,
    spatial_merge_size: int,
    start: int = 0,
    image_grid_thw: torch.Tensor | None = None,
    image_token_id: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Positions (3, L) for one unpadded sequence, starting at `start`; also returns the next free position."""
    ids = input_ids.tolist()
    grids = {
        video_token_id: _split_temporal(video_grid_thw),
        image_token_id: [tuple(g) for g in image_grid_thw.tolist()] if image_grid_thw is not None else [],
    }
    cursor = {video_token_id: 0, image_token_id: 0}
    out = torch.empty(3, len(ids), dtype=torch.long)
    pos, i = start, 0
    while i < len(ids):
        tok = ids[i]
        if tok in cursor and tok is not None:
            t, h, w = grids[tok][cursor[tok]]
            cursor[tok] += 1
            gh, gw = h // spatial_merge_size, w // spatial_merge_size
            n = t * gh * gw
            if ids[i:i + n] != [tok] * n:
                raise ValueError("vision placeholder run does not match its grid")
            tt = torch.arange(t).view(-1, 1, 1).expand(t, gh, gw).reshape(-1)
            hh = torch.arange(gh).view(1, -1, 1).expand(t, gh, gw).reshape(-1)
            ww = torch.arange(gw).view(1, 1, -1).expand(t, gh, gw).reshape(-1)
            out[:, i:i + n] = torch.stack([tt, hh, ww]) + pos
            pos += max(gh, gw)
            i += n
        else:
            j = i
            while j < len(ids) and ids[j] not in cursor:
                j += 1
            out[:, i:j] = torch.arange(pos, pos + j - i)
            pos += j - i
            i = j
    return out, pos


def _split_temporal(grid_thw: torch.Tensor | None) -> list[tuple[int, int, int]]:
    if grid_thw is None:
        return []
    return [(1, int(h), int(w)) for t, h, w in grid_thw.tolist() for _ in range(int(t))]


def position_span(positions: torch.Tensor) -> int:
    """How many positions a piece occupies: next start minus this start."""
    return int(positions.max()) + 1 - int(positions[0, 0])


def rotation_table(deltas: torch.Tensor, inv_freq: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) over head_dim for one shift per token, shape (len(deltas), head_dim), float32 on `device`:
    compute once, apply to every layer's keys (`apply_rotation`). A zero shift is cos 1, sin 0: those tokens come
    out unchanged, bit for bit."""
    angle = deltas.to(device=device, dtype=torch.float32)[:, None] * inv_freq.to(device=device, dtype=torch.float32)
    emb = torch.cat([angle, angle], dim=-1)
    return emb.cos(), emb.sin()


def rotation(delta: int, inv_freq: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """`rotation_table` for a single shift of `delta` positions: (cos, sin) over head_dim."""
    cos, sin = rotation_table(torch.tensor([delta]), inv_freq, device)
    return cos[0], sin[0]


def apply_rotation(keys: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    k = keys.float()
    half = k.shape[-1] // 2
    rotated_half = torch.cat([-k[..., half:], k[..., :half]], dim=-1)
    return (k * cos + rotated_half * sin).to(keys.dtype)


def rotate_keys(keys: torch.Tensor, delta: int, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotate already-rotated keys (..., L, head_dim) as if their positions moved by `delta` on every axis.

    Rotations compose, so no rope scaling is applied again. Done in float32 then cast back: one shift costs one
    rounding of the cache dtype.
    """
    return apply_rotation(keys, *rotation(delta, inv_freq, keys.device))
