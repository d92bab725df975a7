"""The presets resolve to the model card's values, and each is a valid StreamingConfig."""

from __future__ import annotations

import pytest

from streaming_vlm.cuda_config import (PRESET_2B_CUDA, PRESET_2B_ROCM, PRESET_4B_CUDA, PRESET_4B_ROCM,
                                       get_cuda_config)
from streaming_vlm.errors import UserError
from streaming_vlm.inference.config import StreamingConfig


def test_card_values():
    assert PRESET_2B_CUDA["model_path"] == "Qwen/Qwen3-VL-2B-Instruct"
    assert PRESET_2B_CUDA["attn_implementation"] == "auto"  # flash-attn where it imports, else sdpa
    assert (PRESET_2B_CUDA["fps"], PRESET_2B_CUDA["window_size"], PRESET_2B_CUDA["text_sliding_window"]) == (4, 24, 768)
    assert PRESET_4B_CUDA["model_path"] == "Qwen/Qwen3-VL-4B-Instruct"
    assert (PRESET_4B_CUDA["attn_implementation"], PRESET_4B_CUDA["fps"]) == ("auto", 2)
    assert PRESET_2B_ROCM["model_path"].endswith("2B-Instruct") and PRESET_2B_ROCM["attn_implementation"] == "sdpa"
    assert PRESET_4B_ROCM["model_path"].endswith("4B-Instruct") and PRESET_4B_ROCM["attn_implementation"] == "sdpa"
    for preset in (PRESET_4B_CUDA, PRESET_2B_ROCM, PRESET_4B_ROCM):  # paper defaults where the card names none
        assert (preset["window_size"], preset["text_sink"], preset["text_sliding_window"]) == (16, 512, 512)
    for preset in (PRESET_2B_CUDA, PRESET_4B_CUDA, PRESET_2B_ROCM, PRESET_4B_ROCM):
        assert (preset["max_new_tokens"], preset["temperature"], preset["repetition_penalty"]) == (20, 0.9, 1.05)
        StreamingConfig.from_any(preset)  # every key is a real config key


def test_auto_attention_resolves_to_what_imports():
    """`auto` loads flash_attention_2 only where flash-attn imports, else sdpa; asking for flash_attention_2
    without it is one clear error."""
    from streaming_vlm.model.loading import check_attn_implementation, flash_attn_available

    have_flash = flash_attn_available()
    assert check_attn_implementation("auto") == ("flash_attention_2" if have_flash else "sdpa")
    if not have_flash:
        with pytest.raises(UserError, match="needs flash-attn"):
            check_attn_implementation("flash_attention_2")
    assert StreamingConfig().attn_implementation == "auto"


def test_get_cuda_config():
    config = get_cuda_config(model_size="2b", video_path="match.mp4")
    assert config == {**PRESET_2B_CUDA, "video_path": "match.mp4"}
    config["fps"] = 1
    assert PRESET_2B_CUDA["fps"] == 4  # a copy, the preset is untouched
    assert get_cuda_config("4B", "m.mp4")["model_path"] == "Qwen/Qwen3-VL-4B-Instruct"
    assert get_cuda_config("4b", backend="rocm")["attn_implementation"] == "sdpa"
    assert get_cuda_config("2b", backend="auto")["model_path"].endswith("2B-Instruct")
    assert get_cuda_config("2b", "m.mp4", window_size=8)["window_size"] == 8
    with pytest.raises(UserError, match="no preset"):
        get_cuda_config("7b")
