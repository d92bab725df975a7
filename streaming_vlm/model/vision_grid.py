"""The Qwen3-VL vision tower's grid-dependent tensors, computed once per frame grid instead of every second.

On every call the tower derives from `grid_thw` its position-embedding interpolation taps, its rotary position
ids and its attention segment boundaries: about 65 small tensor ops and 26 host syncs (`repeat_interleave` with
tensor repeats, `.item()`), plus a `.tolist()` of the segment lengths in every block when the boundaries live on
the GPU (bench/vision_call_ops.py). A stream's frames keep one size, so its grid repeats every second.

transformers' vision encoders accept these tensors precomputed: each `transformers.vision_utils.get_vision_*`
helper the tower calls pops its key (`interp_indices`, `interp_weights`, `position_ids`, `cu_seqlens`,
`max_seqlen`) from the call's kwargs when present (transformers 5.17 and 5.23 alike). `VisionGrids` computes them
once per grid with those same helpers and the tower's own settings, and passes them in through a kwargs pre-hook
held only for the duration of one forward (`with grids.precomputed(grid_thw): model(...)`). The outputs are
bit-identical (tests/test_vision_grid.py). The segment boundaries stay on the CPU unless flash attention needs them
on the device, so the per-block split needs no sync.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers.utils.generic import is_flash_attention_requested
from transformers.vision_utils import (get_vision_attention_seqlens, get_vision_interpolation_indices_and_weights,
                                       get_vision_position_ids)

_NEEDS = ("num_grid_per_side", "interpolation_mode", "interpolation_align_corners", "spatial_merge_size")


class VisionGrids:
    def __init__(self, visual, device: torch.device):
        self.visual, self.device = visual, device
        self.supported = all(hasattr(visual, a) for a in _NEEDS)  # another tower: calls pass through untouched
        self._by_grid: dict[tuple, dict] = {}
        self.hits = 0  # forwards that used a grid computed earlier

    def kwargs_for(self, grid_thw: torch.Tensor) -> dict:
        """The precomputed tensors for a CPU `grid_thw` (num_videos, 3), computed on first use."""
        key = tuple(tuple(row) for row in grid_thw.tolist())
        if key in self._by_grid:
            self.hits += 1
            return self._by_grid[key]
        v, config = self.visual, self.visual.config
        grid = grid_thw.cpu()
        indices, weights = get_vision_interpolation_indices_and_weights(
            grid, num_grid_per_side=v.num_grid_per_side, mode=v.interpolation_mode,
            align_corners=v.interpolation_align_corners, spatial_merge_size=config.spatial_merge_size)
        positions = get_vision_position_ids(grid, v.spatial_merge_size)
        cu_seqlens, max_seqlen = get_vision_attention_seqlens(grid, config)
        on_device = is_flash_attention_requested(config)  # flash's varlen kernel reads them on the device
        out = {"interp_indices": indices.to(self.device), "interp_weights": weights.to(self.device),
               "position_ids": positions.to(self.device),
               "cu_seqlens": cu_seqlens.to(self.device) if on_device else cu_seqlens}
        if max_seqlen is not None:
            out["max_seqlen"] = max_seqlen
        self._by_grid[key] = out
        return out

    @contextmanager
    def precomputed(self, grid_thw: torch.Tensor | None):
        """Within: the tower's forward gets the tensors for `grid_thw` (a CPU tensor; None = nothing to do)."""
        if grid_thw is None or not self.supported:
            yield
            return
        tensors = self.kwargs_for(grid_thw)

        def inject(_module, args, kwargs):
            return args, {**kwargs, **tensors}  # a fresh dict: the helpers pop their keys from it

        handle = self.visual.register_forward_pre_hook(inject, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()
