"""DeepSpeed under the HF Trainer on CPU-only machines (CI): multi-rank over gloo.

accelerate only selects its DEEPSPEED distributed type when a GPU-like device is present: on a CPU-only host it
finds no backend, reports ONE process (while deepspeed.comm has in fact joined all ranks over gloo), and HF then
fills DeepSpeed's "auto" batch sizes with world size 1, which DeepSpeed rejects. This shim makes accelerate pick
gloo / multi-CPU for such launches; accelerate then upgrades it to DEEPSPEED as it does on GPUs. Nothing changes
when CUDA is available or when DeepSpeed is not configured.

It also tells DeepSpeed not to build its shared-memory collective op (`deepspeed_shm_comm`): deepspeed.comm
JIT-compiles it with g++ when its CPU backend starts (a minute or more of both cores, once per venv path, since
torch's extension cache is keyed by the compile command), and only DeepSpeed inference's `inference_all_reduce`
uses it. Training's collectives (ZeRO-3's all-gather and reduce-scatter, all_reduce) go through torch.distributed
over gloo either way.
"""

from __future__ import annotations

import os

_PATCHED = False


def enable() -> bool:
    """Patch accelerate for a multi-process CPU DeepSpeed launch; returns whether the patch is active."""
    global _PATCHED
    import torch

    if _PATCHED:
        return True
    if torch.cuda.is_available() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    original = PartialState._prepare_backend

    def _prepare_backend(self, cpu: bool = False, sagemaker_dp=False, backend=None):
        found, dtype = original(self, cpu, sagemaker_dp, backend)
        if found is None and dtype == DistributedType.NO and int(os.environ.get("LOCAL_RANK", -1)) != -1:
            return "gloo", DistributedType.MULTI_CPU
        return found, dtype

    PartialState._prepare_backend = _prepare_backend
    _skip_shm_comm_op()
    os.environ.setdefault("ACCELERATE_USE_DEEPSPEED", "true")
    _PATCHED = True
    return True


def _skip_shm_comm_op() -> None:
    """Mark the shm collective op unbuildable, so deepspeed.comm's CPU backend starts without compiling it (the
    backend then has no shm op, as on a host without a C++ compiler)."""
    import deepspeed.ops
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

    deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False
