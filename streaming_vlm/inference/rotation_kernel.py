"""The eviction's key rotation on CUDA as one Triton kernel a layer, in place: each key's two halves read once,
rotated in fp32 by the table's (cos, sin) and written back in the cache dtype (`mrope.apply_rotation`'s arithmetic).

`require_rotation_kernel` checks the kernel once per (device, dtype, head size) against `apply_rotation`; the engine
calls it in `start()`, so a missing Triton or a failing kernel is one clear error before the stream.
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


def _check(device: torch.device, dtype: torch.dtype, dim: int) -> str | None:
    """None where the kernel rotates as `apply_rotation`, else why not."""
    from streaming_vlm.model.mrope import apply_rotation, rotation_table

    if dim & (dim - 1):
        return f"head size {dim} is not a power of two"
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
        if not (ok and torch.equal(buf[..., :17, :], untouched)):
            return "it does not rotate as apply_rotation"
        return None
    except Exception as err:  # noqa: BLE001 - no Triton, no compiler, a launch error: reported by the caller
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def require_rotation_kernel(device: torch.device, dtype: torch.dtype, dim: int) -> None:
    """Check (once per process and key) that the kernel runs for keys of this kind; a RuntimeError if not."""
    key = (torch.device(device), dtype, int(dim))
    if key not in _STATE:
        _STATE[key] = _check(*key)
    if _STATE[key] is not None:
        raise RuntimeError(f"the eviction's Triton rotation kernel cannot run on {device} ({dtype}, head size "
                           f"{dim}): {_STATE[key]}")


def rotate_in_place_cuda(keys: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    """Rotate CUDA `keys` (B, H, N, d; last dim contiguous) in place by the per-token (N, d) float32 table."""
    require_rotation_kernel(keys.device, keys.dtype, keys.shape[-1])
    if keys.stride(-1) != 1 or not cos.is_contiguous() or not sin.is_contiguous():
        raise ValueError("rotate_in_place_cuda needs keys contiguous in the head dim and a contiguous table")
    _launch(keys, cos, sin)
