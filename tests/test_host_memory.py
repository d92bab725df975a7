"""CPU training keeps large freed host blocks for reuse (`streaming_vlm.training.host_memory`), so the output head's
78 MB gradients are not page-faulted in afresh every micro-batch. Measured in a child process: the setting is
process-wide, and the count of minor page faults is the kernel's own."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import json, resource, sys
    import torch
    from streaming_vlm.training.host_memory import keep_freed_memory

    applied = keep_freed_memory() if sys.argv[1] == "keep" else None

    def faults_after_warm_up(steps=12, warm=2):
        # A micro-batch's pattern on the tiny default's tied head (78 MB): the embedding's dense gradient, its sum
        # with the head's, small tensors in between, then both freed.
        w = torch.randn(151936, 128)
        faults = []
        for _ in range(steps):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            g = torch.zeros(151936, 128)
            s = g + w
            small = [torch.randn(100) for _ in range(50)]
            del g, s, small
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        return sum(faults[warm:])

    print(json.dumps({"applied": applied, "faults": faults_after_warm_up()}))
""")


def _faults(mode: str) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=120,
                       env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_head_sized_blocks_are_reused_instead_of_faulted_in_again():
    default, kept = _faults("default"), _faults("keep")
    pages = 10 * 2 * (151936 * 128 * 4 // 4096)  # 10 steps after the warm-up, two 78 MB blocks each
    assert kept["applied"] is True
    assert default["faults"] > pages // 2, default  # glibc's default: every 78 MB block is a fresh mapping
    assert kept["faults"] < default["faults"] // 4, (kept, default)  # freed blocks come back without faulting in
