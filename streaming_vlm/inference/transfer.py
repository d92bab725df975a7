"""Host-to-device copies that do not stall the host."""

from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on `device`. To CUDA through pinned memory, asynchronously: a copy from pageable memory waits
    for all work queued before it on the stream, and the host with it (torch's pinned-memory cache keeps the
    buffer until the copy is done)."""
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type == "cuda":
        return tensor.to(device)
    return tensor.contiguous().pin_memory().to(device, non_blocking=True)  # (an expanded view cannot be pinned)
