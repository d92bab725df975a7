"""Where one optimizer step's time goes: a Trainer callback that profiles ONE step of a real `train.py` run.

The training bench adds it as one more node of the config's `callbacks:` (no hook in the package), on a step after
the measured ones:

    python train.py experiment=stage1_2b ... \
        '+callbacks.profile_step={_target_: bench.step_profile.ProfileStep, step: 4, out: /tmp/profile.txt}'

It writes the step's wall time, the GPU kernel time by kind (GEMMs, attention, Triton (Inductor's or Liger's),
optimizer, copies, other), the time the GPU sat idle (wall minus kernel time: host work, syncs, loader waits), the
frozen vision tower's share (CUDA events around its forwards, on the one stream everything runs on), and the top
kernels.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from transformers import TrainerCallback

KINDS = (  # first match wins, on the lower-cased kernel name
    ("GEMM", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "matmul")),
    ("attention", ("flash", "fmha", "attention", "sdpa", "cudnn")),
    ("optimizer", ("adam", "multi_tensor", "foreach", "fused_adam")),
    ("copies", ("memcpy", "memset", "copy")),
    ("Triton (Inductor, Liger)", ("triton", "_kernel", "liger", "rope", "rms_norm", "swiglu")),
)


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, keys in KINDS:
        if any(k in low for k in keys):
            return kind
    return "other (elementwise, norms, reductions)"


def device_time_us(evt) -> float:
    for attr in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(evt, attr):
            return float(getattr(evt, attr))
    return 0.0


def summarize(prof, wall_s: float, vision_s: float | None = None) -> str:
    rows = [(e.key, device_time_us(e), e.count) for e in prof.key_averages()]
    rows = [r for r in rows if r[1] > 0]
    busy_s = sum(r[1] for r in rows) / 1e6
    by_kind: dict[str, float] = {}
    for name, us, _ in rows:
        by_kind[kind_of(name)] = by_kind.get(kind_of(name), 0.0) + us / 1e6
    out = [f"step wall {wall_s:.3f} s; GPU kernels {busy_s:.3f} s; GPU idle {max(wall_s - busy_s, 0):.3f} s "
           f"({100 * max(wall_s - busy_s, 0) / wall_s:.1f}%: host work, syncs, loader waits)"
           + (f"; vision tower forwards {vision_s:.3f} s ({100 * vision_s / wall_s:.1f}% of wall)"
              if vision_s is not None else ""), "",
           "| kind | GPU time (s) | share of wall |", "|---|---:|---:|"]
    for kind, s in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        out.append(f"| {kind} | {s:.3f} | {100 * s / wall_s:.1f}% |")
    out += ["", "| top kernels | calls | GPU time (s) |", "|---|---:|---:|"]
    for name, us, count in sorted(rows, key=lambda r: -r[1])[:25]:
        out.append(f"| `{name[:90]}` | {count} | {us / 1e6:.3f} |")
    if not rows:  # no GPU: the host's own operators instead
        out += ["", "| top CPU operators | calls | self CPU time (s) |", "|---|---:|---:|"]
        for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:15]:
            out.append(f"| `{e.key[:90]}` | {e.count} | {e.self_cpu_time_total / 1e6:.3f} |")
    return "\n".join(out)


class ProfileStep(TrainerCallback):
    """Profile optimizer step `step` (1-based, as `state.global_step` counts) and write the summary to `out`."""

    def __init__(self, step: int, out: str):
        self.step, self.out = int(step), Path(out)
        self.prof = None
        self.t0 = 0.0
        self.events, self.hooks = [], []

    def _time_vision(self, model):
        """CUDA events around every forward of the vision tower during the profiled step."""
        visual = next((m for n, m in model.named_modules() if n.endswith("visual")), None)
        if visual is None or not torch.cuda.is_available():
            return

        def pre(*_):
            self.events.append([torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)])
            self.events[-1][0].record()

        def post(*_):
            self.events[-1][1].record()

        self.hooks = [visual.register_forward_pre_hook(pre), visual.register_forward_hook(post)]

    def on_step_begin(self, args, state, control, **kwargs):
        if self.prof is None and state.global_step + 1 == self.step:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
                torch.cuda.synchronize()
            self._time_vision(kwargs["model"])
            self.prof = torch.profiler.profile(activities=activities)
            self.prof.__enter__()
            self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.prof is not None and state.global_step == self.step:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            wall = time.perf_counter() - self.t0
            self.prof.__exit__(None, None, None)
            for h in self.hooks:
                h.remove()
            vision = sum(a.elapsed_time(b) for a, b in self.events) / 1e3 if self.events else None
            if state.is_world_process_zero:
                self.out.parent.mkdir(parents=True, exist_ok=True)
                self.out.write_text(summarize(self.prof, wall, vision) + "\n")
            self.prof = None
