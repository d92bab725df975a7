"""Loading a Qwen3-VL checkpoint (hub id or directory) the same way for training, eval and inference.

Safe by default: safetensors only, `trust_remote_code=False` unless asked. Every user mistake (bad path, unknown
attention implementation, flash-attn not installed, unknown dtype) becomes a `UserError` with one clear line.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from streaming_vlm.errors import UserError
from streaming_vlm.model.weights import check_weights  # noqa: F401  (re-exported: loading checks before it loads)
from streaming_vlm.model.hub import looks_like_hub_id, resolve_hub_id

ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def flash_attn_available() -> bool:
    """flash-attn imports here (not just installed: a wheel built for another torch fails at import)."""
    if importlib.util.find_spec("flash_attn") is None:
        return False
    try:
        import flash_attn  # noqa: F401
    except Exception:  # noqa: BLE001 - an ABI mismatch raises ImportError, OSError or RuntimeError
        return False
    return True


def check_attn_implementation(name: str) -> str:
    """The attention implementation to load with: `auto` is flash_attention_2 where flash-attn imports, else sdpa
    (torch's fused kernels, on any install); an explicit flash_attention_2 without flash-attn is a UserError."""
    if name not in ATTN_IMPLEMENTATIONS:
        raise UserError(f"unknown attn_implementation {name!r}; choose one of {', '.join(ATTN_IMPLEMENTATIONS)}")
    if name == "auto":
        return "flash_attention_2" if flash_attn_available() else "sdpa"
    if name == "flash_attention_2" and not flash_attn_available():
        raise UserError("attn_implementation flash_attention_2 needs flash-attn, which does not import here: "
                        "pip install 'streaming-vlm[flash]', or use --attn_implementation auto")
    return name


def resolve_dtype(name: str | torch.dtype | None, device: str | torch.device | None = None) -> torch.dtype:
    """Explicit dtype, or bf16 on CUDA and fp32 on CPU when not given."""
    if isinstance(name, torch.dtype):
        return name
    if name in (None, "auto"):
        return torch.bfloat16 if str(device or "").startswith("cuda") else torch.float32
    if name not in DTYPES:
        raise UserError(f"unknown dtype {name!r}; choose one of {', '.join(sorted(set(DTYPES)))}")
    return DTYPES[name]


def resolve_device(name: str | None = None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def _check_path(path: str | os.PathLike) -> str:
    """A checked local directory, or a hub id resolved once (model/hub.py: no network = one clear line)."""
    path = str(path)
    if looks_like_hub_id(path):
        return resolve_hub_id(path)
    if not os.path.isdir(path):
        raise UserError(f"model path not found: {path}")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise UserError(f"not a model checkpoint (no config.json): {path}")
    return path


def load_processor(path: str | os.PathLike, trust_remote_code: bool = False):
    from transformers import AutoProcessor

    path = _check_path(path)
    try:
        return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise UserError(f"cannot load processor from {path}: {str(err).splitlines()[0]}") from None


def load_model(path: str | os.PathLike, attn_implementation: str = "auto", dtype=None, device=None,
               trust_remote_code: bool = False, **kwargs):
    """`Qwen3VLForConditionalGeneration.from_pretrained` with our checks; returns the model for inference: eval
    mode, no parameter requiring grad (so our text stack may fuse its projections, model/text_step.py), the vision
    tower's frames in one attention call as training runs them (model/vision_attention.py)."""
    from transformers import Qwen3VLForConditionalGeneration

    from streaming_vlm.model.vision_attention import use_segment_attention

    path = _check_path(path)
    check_weights(path)
    attn_implementation = check_attn_implementation(attn_implementation)
    target = resolve_device(device) if device is not None else None
    torch_dtype = resolve_dtype(dtype, target)
    try:
        model = Qwen3VLForConditionalGeneration.from_pretrained(
            path, dtype=torch_dtype, attn_implementation=attn_implementation, use_safetensors=True,
            trust_remote_code=trust_remote_code, **kwargs)
    except OSError as err:
        raise UserError(f"cannot load model from {path}: {str(err).splitlines()[0]}") from None
    if target is not None:
        model = model.to(target)
    use_segment_attention(model)
    return model.eval().requires_grad_(False)
