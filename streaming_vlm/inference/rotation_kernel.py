"""The eviction's key rotation on CUDA as one Triton kernel a layer, in place.

After an eviction every moved key is re-rotated by its own shift (`mrope.rotation_table`, cache.py). Eagerly that
is ~10 kernels a layer over fp32 copies of the moved keys; through torch.compile it still took 2.8 ms a second
more than the gather alone for the 2B on an H200 (bench/kernel_micro.py evict; the cause was not looked into).
This kernel reads each key's two halves once, rotates them in fp32 with the table's (cos, sin) and writes them
back in the cache dtype: the arithmetic of `mrope.apply_rotation`, one pass, 0.5 ms more than the gather.

`rotate_in_place_cuda` checks the kernel once per process against `apply_rotation` on a strided test tensor, and
returns False (the caller rotates another way) where Triton is missing, the head size is not a power of two, or
the check fails.
"""

from __future__ import annotations

import torch

_STATE: dict = {}


def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def rotate_keys(k_ptr, cos_ptr, sin_ptr, n_tokens, n_heads, stride_b, stride_h, stride_t, table_stride,
                    HALF: tl.constexpr, BLOCK: tl.constexpr):
        pid_t, pid_bh = tl.program_id(0), tl.program_id(1)
        b, h = pid_bh // n_heads, pid_bh % n_heads
        t = pid_t * BLOCK + tl.arange(0, BLOCK)
        d = tl.arange(0, HALF)
        mask = (t < n_tokens)[:, None]
        first = k_ptr + b * stride_b + h * stride_h + t[:, None] * stride_t + d[None, :]
        x1 = tl.load(first, mask=mask).to(tl.float32)
        x2 = tl.load(first + HALF, mask=mask).to(tl.float32)
        table = t[:, None] * table_stride + d[None, :]
        c = tl.load(cos_ptr + table, mask=mask)
        s = tl.load(sin_ptr + table, mask=mask)
        tl.store(first, (x1 * c - x2 * s).to(k_ptr.dtype.element_ty), mask=mask)
        tl.store(first + HALF, (x2 * c + x1 * s).to(k_ptr.dtype.element_ty), mask=mask)

    return triton, rotate_keys


def _launch(keys: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    triton, kernel = _STATE["kernel"]
    b, h, n, d = keys.shape
    block = 32
    kernel[(triton.cdiv(n, block), b * h)](keys, cos, sin, n, h, keys.stride(0), keys.stride(1), keys.stride(2),
                                          cos.stride(0), HALF=d // 2, BLOCK=block)


def _works(device: torch.device, dtype: torch.dtype, dim: int) -> bool:
    from streaming_vlm.model.mrope import apply_rotation, rotation_table

    try:
        _STATE["kernel"] = _kernel()
        g = torch.Generator(device=device).manual_seed(0)
        buf = torch.randn(2, 3, 300, dim, device=device, generator=g).to(dtype)
        keys = buf[..., 17:250, :]  # strided, as a layer's buffer view
        inv_freq = 1.0 / (1e6 ** (torch.arange(0, dim, 2, device=device).float() / dim))
        cos, sin = rotation_table(torch.randint(-900, 900, (keys.shape[-2],), device=device, generator=g),
                                  inv_freq, device)
        want = apply_rotation(keys, cos, sin)
        untouched = buf[..., :17, :].clone()
        _launch(keys, cos, sin)
        ok = torch.allclose(keys.float(), want.float(), atol=2e-2, rtol=2e-2)
        return bool(ok and torch.equal(buf[..., :17, :], untouched))
    except Exception:  # noqa: BLE001 - no Triton, no compiler, a launch error: the caller falls back
        return False


def rotate_in_place_cuda(keys: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> bool:
    """Rotate CUDA `keys` (B, H, N, d; last dim contiguous) in place by the per-token (N, d) float32 table;
    False (nothing done) where the kernel does not apply."""
    d = keys.shape[-1]
    if (keys.device.type != "cuda" or d & (d - 1) or keys.stride(-1) != 1 or not cos.is_contiguous()
            or not sin.is_contiguous()):
        return False
    key = (keys.device, keys.dtype, d)
    if key not in _STATE:
        _STATE[key] = _works(*key)
    if not _STATE[key]:
        return False
    _launch(keys, cos, sin)
    return True
