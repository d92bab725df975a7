"""The eviction's Triton rotation kernel (rotation_kernel.py) computes `mrope.apply_rotation` in place, touching
nothing outside the rotated view. CI has no GPU: the kernel runs in Triton's interpreter (TRITON_INTERPRET=1, set
before Triton is imported, hence a subprocess); on CUDA the engine checks it the same way before first use."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

SCRIPT = r"""
import json
import torch
from streaming_vlm.inference.rotation_kernel import require_rotation_kernel, rotate_in_place_cuda
from streaming_vlm.model.mrope import apply_rotation, rotation_table

require_rotation_kernel(torch.device("cpu"), torch.float32, 16)  # the engine's check before first use: passes
out = {}
g = torch.Generator().manual_seed(0)
for dtype in (torch.float32, torch.bfloat16):
    buf = torch.randn(2, 3, 90, 16, generator=g).to(dtype)
    keys = buf[..., 7:70, :]  # a strided view, as a layer's buffer after an eviction
    inv_freq = 1.0 / (1e6 ** (torch.arange(0, 16, 2).float() / 16))
    cos, sin = rotation_table(torch.randint(-500, 500, (keys.shape[-2],), generator=g), inv_freq, "cpu")
    want = apply_rotation(keys, cos, sin)
    before = buf.clone()
    rotate_in_place_cuda(keys, cos, sin)  # the kernel, on the interpreter's CPU tensors
    out[str(dtype)] = {"err": (keys.float() - want.float()).abs().max().item(),
                       "moved": (keys.float() - before[..., 7:70, :].float()).abs().max().item(),
                       "outside_untouched": torch.equal(buf[..., :7, :], before[..., :7, :])
                       and torch.equal(buf[..., 70:, :], before[..., 70:, :])}
print(json.dumps(out))
"""


def test_kernel_rotates_as_apply_rotation():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["torch.float32"]["err"] < 1e-5  # fp32: the same arithmetic
    assert out["torch.bfloat16"]["err"] <= 2 ** -6 * 2  # bf16: at most a rounding step of |key| ~ 4
    for case in out.values():
        assert case["outside_untouched"] and case["moved"] > 0.1
