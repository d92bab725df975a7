"""Kernel choices behind the engine, at 2B stream shapes, on a GPU: the attention variants for a second's prefill,
the vision tower and one decode step, and decode GEMVs separate vs fused.

    python bench/kernel_micro.py                 # prints the tables (CUDA only)
    python bench/kernel_micro.py evict           # only these tables (attention, gemv, evict)

Rows (attention: max |error| against fp32 math attention with the mask written out):
  prefill  792 queries (one 2B second) over 13.6K cached keys, 16 query / 8 K/V heads of 128, bottom-right causal
  vision   3072 patches (2 frames of 720p at the 2B budget), 16 heads of 64, no mask
  decode   1 query over 14.6K slots with an additive mask, replayed as a CUDA graph (what the slot step runs)
  gemv     the 28 layers' projections for one token: 7 products a layer vs q|k|v and gate|up fused (4 a layer)
  evict    one eviction: the kept 13.5K of 14.3K tokens gathered into spare buffers and the moved keys rotated in
           place, 28 layers of 8 K/V heads of 128: rotation eager, compiled, the Triton kernel, none
Used to pick `attention.chunk_attention` (prefill), torch's default for vision (cuDNN on an H200) and the fused step
(`model/text_step.py`). Results: BENCHMARKS.md.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

DEV, DT = "cuda", torch.bfloat16
ALL = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH, SDPBackend.CUDNN_ATTENTION]


def timed(fn, n: int = 30) -> tuple[torch.Tensor, float]:
    for _ in range(3):
        out = fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return out, (time.perf_counter() - t) / n * 1e6


def graphed(fn, backends):
    with sdpa_kernel(backends):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn()

    def replay():
        graph.replay()
        return out
    return replay


def row(rows, name, fn, ref, backends=ALL, graph=False):
    try:
        if graph:
            out, us = timed(graphed(fn, backends), 200)
        else:
            with sdpa_kernel(backends):
                out, us = timed(fn)
        rows.append(f"| {name} | {us:.1f} | {(out.float() - ref).abs().max().item():.2g} |")
    except RuntimeError as err:
        rows.append(f"| {name} | failed: {str(err).splitlines()[0][:80]} | |")


def attention_rows() -> list[str]:
    torch.manual_seed(0)
    rows = ["| attention | us | max error |", "|---|---:|---:|"]
    L, S, hq, hkv, d = 792, 13600, 16, 8, 128
    q = torch.randn(1, hq, L, d, device=DEV, dtype=DT)
    k, v = torch.randn(1, hkv, S, d, device=DEV, dtype=DT), torch.randn(1, hkv, S, d, device=DEV, dtype=DT)
    allowed = torch.ones(L, S, dtype=torch.bool, device=DEV).tril(S - L)
    additive = torch.zeros(L, S, device=DEV, dtype=DT).masked_fill(~allowed, torch.finfo(DT).min)[None, None]
    ref = F.scaled_dot_product_attention(q.float(), k.float().repeat_interleave(2, 1),
                                         v.float().repeat_interleave(2, 1), attn_mask=allowed)
    eff = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    row(rows, "prefill: transformers' sdpa (K/V repeated, additive mask) - memory-efficient",
        lambda: F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1),
                                               attn_mask=additive), ref, eff)
    row(rows, "prefill: additive mask, grouped heads - memory-efficient",
        lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=additive, enable_gqa=True), ref, eff)
    row(rows, "prefill: additive mask, grouped heads - cuDNN (a plan per cache length)",
        lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=additive, enable_gqa=True), ref,
        [SDPBackend.CUDNN_ATTENTION])
    bias = causal_lower_right(L, S)
    row(rows, "prefill: bottom-right causal bias, grouped heads (chunk_attention)",
        lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=True), ref)
    n, heads, hd = 3072, 16, 64
    qkv = [torch.randn(1, heads, n, hd, device=DEV, dtype=DT) for _ in range(3)]
    ref_v = F.scaled_dot_product_attention(*[t.float() for t in qkv])
    for name, backend in (("memory-efficient", SDPBackend.EFFICIENT_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION),
                          ("cuDNN", SDPBackend.CUDNN_ATTENTION)):
        row(rows, f"vision block: {name}", lambda: F.scaled_dot_product_attention(*qkv), ref_v, [backend])
    C = 14600
    q1 = torch.randn(1, hq, 1, d, device=DEV, dtype=DT)
    k1, v1 = torch.randn(1, hkv, C, d, device=DEV, dtype=DT), torch.randn(1, hkv, C, d, device=DEV, dtype=DT)
    m1 = torch.zeros(1, 1, 1, C, device=DEV, dtype=DT)
    m1[..., 13000:] = torch.finfo(DT).min
    ref1 = F.scaled_dot_product_attention(q1.float(), k1.float().repeat_interleave(2, 1),
                                          v1.float().repeat_interleave(2, 1), attn_mask=m1.float())
    step = lambda: F.scaled_dot_product_attention(q1, k1, v1, attn_mask=m1, enable_gqa=True)  # noqa: E731
    row(rows, "decode step (graph): cuDNN", step, ref1, [SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH], graph=True)
    row(rows, "decode step (graph): memory-efficient", step, ref1, eff, graph=True)
    return rows


def gemv_rows() -> list[str]:
    H, inter, Q, KV, layers = 2048, 6144, 2048, 1024, 28
    x, xi = torch.randn(1, H, device=DEV, dtype=DT), torch.randn(1, inter, device=DEV, dtype=DT)
    sep = [{n: torch.randn(o, i, device=DEV, dtype=DT) for n, (o, i) in
            {"q": (Q, H), "k": (KV, H), "v": (KV, H), "o": (H, Q), "g": (inter, H), "u": (inter, H),
             "d": (H, inter)}.items()} for _ in range(layers)]
    fused = [{"qkv": torch.cat([w["q"], w["k"], w["v"]]), "o": w["o"], "gu": torch.cat([w["g"], w["u"]]),
              "d": w["d"]} for w in sep]

    def run_separate():
        for w in sep:
            for n in "qkvogu":
                x @ w[n].T
            xi @ w["d"].T

    def run_fused():
        for w in fused:
            x @ w["qkv"].T
            x @ w["o"].T
            x @ w["gu"].T
            xi @ w["d"].T

    gb = sum(t.numel() * 2 for w in sep for t in w.values()) / 1e9
    rows = ["| decode GEMVs, 28 layers | ms | TB/s |", "|---|---:|---:|"]
    for name, fn in (("7 a layer (q, k, v, o, gate, up, down)", run_separate),
                     ("4 a layer (q|k|v, o, gate|up, down)", run_fused)):
        _, us = timed(graphed(fn, ALL), 50)
        rows.append(f"| {name} | {us / 1e3:.3f} | {gb / (us / 1e6) / 1e3:.2f} |")
    return rows


def eviction_rows() -> list[str]:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from streaming_vlm.model.mrope import apply_rotation, rotation_table

    def eager_rotation(keys, cos, sin):  # the cache's rotation off CUDA (cache.py, SpareLayer.compact)
        keys.copy_(apply_rotation(keys, cos, sin))

    layers, heads, dim, first, n, drop, spare = 28, 8, 128, 1100, 14300, 800, 900
    m = n - drop
    inv_freq = 1.0 / (5e6 ** (torch.arange(0, dim, 2, device=DEV).float() / dim))
    kv = [(torch.randn(1, heads, n, dim, device=DEV, dtype=DT), torch.randn(1, heads, n, dim, device=DEV, dtype=DT))
          for _ in range(layers)]
    index = torch.cat([torch.arange(first, device=DEV), torch.arange(first + drop, n, device=DEV)])
    cos, sin = rotation_table(torch.full((m - first,), -drop, device=DEV), inv_freq, DEV)
    bufs = [(torch.empty(1, heads, m + spare, dim, device=DEV, dtype=DT),
             torch.empty(1, heads, m + spare, dim, device=DEV, dtype=DT)) for _ in range(layers)]
    from streaming_vlm.inference.rotation_kernel import rotate_in_place_cuda

    rotate_in_place_cuda(bufs[0][0][..., 3:40, :], cos[:37], sin[:37])  # raises where the Triton kernel cannot run
    variants = {"eager rotation (fp32 ops)": eager_rotation,
                "Triton kernel (the cache's, rotation_kernel.py)": rotate_in_place_cuda, "no rotation": None}

    def compact(rotate):
        for (k, v), (kb, vb) in zip(kv, bufs):
            torch.index_select(k, -2, index, out=kb[..., :m, :])
            torch.index_select(v, -2, index, out=vb[..., :m, :])
            if rotate is not None:
                rotate(kb[..., first:m, :], cos, sin)

    gb = layers * 2 * (n + m) * heads * dim * 2 / 1e9  # K and V read whole, kept part written
    rows = ["| eviction: gather into spare buffers + rotation, 28 layers | ms | GB/s (gather bytes) | max error vs eager |",
            "|---|---:|---:|---:|"]
    compact(eager_rotation)
    ref = bufs[0][0][..., :m, :].clone()
    for name, rotate in variants.items():
        compact(rotate)
        err = (bufs[0][0][..., :m, :].float() - ref.float()).abs().max().item() if rotate is not None else float("nan")
        _, us = timed(lambda: compact(rotate), 20)
        rows.append(f"| {name} | {us / 1e3:.2f} | {gb / (us / 1e6):.0f} | {err:.3g} |")
    return rows


def main():
    import sys

    if not torch.cuda.is_available():
        raise SystemExit("kernel_micro needs a CUDA device")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    tables = {"attention": attention_rows, "gemv": gemv_rows, "evict": eviction_rows}
    for name in sys.argv[1:] or tables:
        print("\n".join(tables[name]()))
        print()


if __name__ == "__main__":
    main()
