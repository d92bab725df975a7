"""The tiny checkpoint loads like Qwen/Qwen3-VL-2B-Instruct, tokenizes like Qwen, and runs on real video."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
from transformers.video_utils import VideoMetadata

from in_process import run_module  # tests/in_process.py
from streaming_vlm.model.tiny import QWEN3VL_ADDED_TOKENS, build_checkpoint, build_config

REAL_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|vision_start|>": 151652,
            "<|vision_end|>": 151653, "<|image_pad|>": 151655, "<|video_pad|>": 151656, "<think>": 151667,
            "</think>": 151668}


def test_loads_through_the_hub_calls(tiny_ckpt):
    processor = AutoProcessor.from_pretrained(tiny_ckpt)
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt)
    assert isinstance(processor, Qwen3VLProcessor)
    cfg = model.config
    assert cfg.text_config.vocab_size == 151936
    assert cfg.video_token_id == 151656 and cfg.vision_start_token_id == 151652
    assert cfg.text_config.rope_parameters["mrope_interleaved"] is True
    assert sum(cfg.text_config.rope_parameters["mrope_section"]) == cfg.text_config.head_dim // 2
    assert len(cfg.vision_config.deepstack_visual_indexes) == 3
    assert len(model.model.visual.deepstack_merger_list) == 3
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()


def test_token_ids_match_qwen(tiny_processor):
    tok = tiny_processor.tokenizer
    assert tok("Hello world").input_ids == [9707, 1879]
    for text, tid in REAL_IDS.items():
        assert tok.convert_tokens_to_ids(text) == tid
    assert [tok.convert_tokens_to_ids(t) for t, _ in QWEN3VL_ADDED_TOKENS] == list(range(151643, 151669))
    ids = tok("<|im_start|>assistant\nGoal!<|im_end|>").input_ids
    assert ids[0] == 151644 and ids[-1] == 151645
    assert tok.decode(tok(" Red lead two one ...").input_ids) == " Red lead two one ..."


def test_chat_template_renders_qwen_format(tiny_processor):
    msgs = [{"role": "system", "content": "You are a commentator."},
            {"role": "user", "content": [{"type": "text", "text": "Time=3.0-4.0s"}, {"type": "video"}]}]
    text = tiny_processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a commentator.<|im_end|>\n"
                    "<|im_start|>user\nTime=3.0-4.0s<|vision_start|><|video_pad|><|vision_end|><|im_end|>\n"
                    "<|im_start|>assistant\n")


def test_forward_on_a_real_video_tensor(tiny_ckpt, tiny_processor):
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt).eval()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(4, 96, 160, 3), dtype=np.uint8)
    meta = VideoMetadata(total_num_frames=4, fps=2.0, frames_indices=[2024, 2025, 2026, 2027])
    text = tiny_processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}]}], tokenize=False, add_generation_prompt=True)
    inputs = tiny_processor(text=[text], videos=[frames], video_metadata=[meta], do_sample_frames=False,
                            return_tensors="pt")
    assert inputs["video_grid_thw"].tolist() == [[2, 6, 10]]
    decoded = tiny_processor.tokenizer.decode(inputs["input_ids"][0])
    assert "<1012.2 seconds>" in decoded and "<1013.2 seconds>" in decoded
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.shape == (1, inputs["input_ids"].shape[1], 151936)
    assert torch.isfinite(out.logits).all()


def _digest(path):
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_same_seed_same_weights(tmp_path, tiny_ckpt):
    again = build_checkpoint(tmp_path / "a", seed=0)
    other = build_checkpoint(tmp_path / "b", seed=1)
    assert _digest(again) == _digest(tiny_ckpt)
    assert _digest(other) != _digest(tiny_ckpt)


@pytest.mark.parametrize("size,hidden,layers", [("2b", 2048, 28), ("4b", 2560, 36)])
def test_real_size_configs(size, hidden, layers):
    cfg = build_config(size)
    assert cfg.text_config.hidden_size == hidden and cfg.text_config.num_hidden_layers == layers
    assert cfg.text_config.rope_parameters["mrope_section"] == [24, 20, 20]
    assert list(cfg.vision_config.deepstack_visual_indexes) == [5, 11, 17]
    assert cfg.vision_config.out_hidden_size == hidden


@pytest.mark.parametrize("args,needle", [
    (["--size", "7b"], "unknown model size"),
    (["--dtype", "int3"], "unknown dtype"),
])
def test_cli_bad_input_is_one_line(tmp_path, args, needle, capfd):
    """The factory CLI's main in this process (the same module as a process: test_bad_inputs.py)."""
    capfd.readouterr()
    code = run_module(["-m", "streaming_vlm.model.tiny", "--out", str(tmp_path / "x"), *args])
    err = capfd.readouterr().err
    assert code != 0
    lines = [ln for ln in err.splitlines() if ln.strip() and "WARNING" not in ln]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err


def test_cli_unwritable_out(tmp_path, capfd):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    capfd.readouterr()
    code = run_module(["-m", "streaming_vlm.model.tiny", "--out", str(blocker / "sub")])
    err = capfd.readouterr().err
    assert code != 0 and "cannot write checkpoint" in err and "Traceback" not in err
