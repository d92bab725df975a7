"""StreamingVLM for Qwen3-VL: streaming SFT on overlapped chunks and real-time inference with a bounded KV cache."""

import logging as _logging

__version__ = "0.1.0"


def _drop_cpu_accelerator_notice(record: _logging.LogRecord) -> bool:
    """DeepSpeed logs a WARNING, "Setting accelerator to CPU. If you have GPU ... we were unable to detect it", the
    first time it is imported on a host without CUDA, and accelerate imports it inside every `save_pretrained`.
    On a CPU machine that is the expected choice, and our own logs already say where a run trains, so the notice
    is dropped (its detection is untouched; every other DeepSpeed message passes). Installed before DeepSpeed is
    imported: its logger is the one named "DeepSpeed"."""
    return not record.getMessage().startswith("Setting accelerator to CPU.")


_logging.getLogger("DeepSpeed").addFilter(_drop_cpu_accelerator_notice)
