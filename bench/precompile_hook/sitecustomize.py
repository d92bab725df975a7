"""Bench-only probe (bench/cli_gpu_job.sh --startup): with TORCH_CACHING_PRECOMPILE=1, torch's experimental
caching precompile saves Dynamo's traced frames next to Inductor's cache, so a warm start can skip the Dynamo trace.
The save happens only when a process calls `torch.compiler.save_cache_artifacts()`; this hook, on PYTHONPATH for
the probe's runs alone, calls it when the CLI process exits. Not the engine's path: the probe decides whether it
should become one."""

import atexit
import os
import sys

if os.environ.get("TORCH_CACHING_PRECOMPILE") == "1":

    def _save() -> None:
        if "torch" not in sys.modules:
            return
        import torch

        try:
            torch.compiler.save_cache_artifacts()
            print("precompile hook: saved Dynamo's cache", file=sys.stderr)
        except Exception as err:  # a probe reports what failed, in one line, and never hides it
            print(f"precompile hook: save failed: {type(err).__name__}: {err}", file=sys.stderr)

    atexit.register(_save)
