"""Inference presets for Qwen3-VL 2B/4B on CUDA and ROCm, as the model card documents.

    from streaming_vlm.cuda_config import get_cuda_config, PRESET_2B_CUDA
    from streaming_vlm.inference.inference import streaming_inference
    config = get_cuda_config(model_size="2b", video_path="match.mp4")
    results = streaming_inference(config)

| preset          | model                       | attention          | fps | window | text window |
|-----------------|-----------------------------|--------------------|-----|--------|-------------|
| PRESET_2B_CUDA  | Qwen/Qwen3-VL-2B-Instruct   | auto               | 4   | 24 s   | 768         |
| PRESET_4B_CUDA  | Qwen/Qwen3-VL-4B-Instruct   | auto               | 2   | 16 s   | 512         |
| PRESET_2B_ROCM  | Qwen/Qwen3-VL-2B-Instruct   | sdpa               | 2   | 16 s   | 512         |
| PRESET_4B_ROCM  | Qwen/Qwen3-VL-4B-Instruct   | sdpa               | 2   | 16 s   | 512         |

Values not named on the card (window 16 s, text windows 512, 20 tokens/s, temperature 0.9, repetition penalty
1.05) are the paper's defaults (REFERENCE §3). `auto` attention is flash_attention_2 where flash-attn imports and
sdpa otherwise, so the CUDA presets run on a stock PyTorch install; the card names flash_attention_2 for CUDA.
How the engine runs (compiled prefill, CUDA-graph decode, ...) is not a preset value: the engine picks it in
`start()` from the device and the model. Each preset is a plain dict of `StreamingConfig` keys.
"""

from __future__ import annotations

import copy

from streaming_vlm.errors import UserError

MODEL_PATHS = {"2b": "Qwen/Qwen3-VL-2B-Instruct", "4b": "Qwen/Qwen3-VL-4B-Instruct"}

_COMMON = {"window_size": 16, "text_sink": 512, "text_sliding_window": 512, "max_new_tokens": 20,
           "temperature": 0.9, "repetition_penalty": 1.05, "pos_mode": "contiguous"}

PRESET_2B_CUDA = {"model_path": MODEL_PATHS["2b"], "attn_implementation": "auto",
                  **_COMMON, "fps": 4, "window_size": 24, "text_sliding_window": 768}
PRESET_4B_CUDA = {"model_path": MODEL_PATHS["4b"], "attn_implementation": "auto", **_COMMON, "fps": 2}
PRESET_2B_ROCM = {"model_path": MODEL_PATHS["2b"], "attn_implementation": "sdpa", **_COMMON, "fps": 2}
PRESET_4B_ROCM = {"model_path": MODEL_PATHS["4b"], "attn_implementation": "sdpa", **_COMMON, "fps": 2}

PRESETS = {("2b", "cuda"): PRESET_2B_CUDA, ("4b", "cuda"): PRESET_4B_CUDA,
           ("2b", "rocm"): PRESET_2B_ROCM, ("4b", "rocm"): PRESET_4B_ROCM}


def detect_backend() -> str:
    """"rocm" on a ROCm build of torch, else "cuda"."""
    import torch

    return "rocm" if getattr(torch.version, "hip", None) else "cuda"


def get_cuda_config(model_size: str = "2b", video_path: str | None = None, backend: str = "cuda",
                    **overrides) -> dict:
    """A fresh copy of the preset for `model_size` ("2b" | "4b") on `backend` ("cuda" | "rocm" | "auto"),
    with `video_path` and any `StreamingConfig` key overridden."""
    size = str(model_size).lower()
    if backend == "auto":
        backend = detect_backend()
    if (size, backend) not in PRESETS:
        raise UserError(f"no preset for model_size={model_size!r}, backend={backend!r}; "
                        f"choose model_size 2b|4b and backend cuda|rocm|auto")
    config = copy.deepcopy(PRESETS[(size, backend)])
    if video_path is not None:
        config["video_path"] = str(video_path)
    config.update(overrides)
    return config
