"""What a user runs prints no warning about our own files or settings: a factory checkpoint loads, and goes through
the HF Trainer's special-token alignment, without a warning; composing any training config, and building the
TrainingArguments from it, warns about nothing."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.mark.parametrize("ckpt", ["tiny_ckpt", "hub_like_ckpt"])
def test_factory_checkpoint_loads_and_trains_without_warnings(ckpt, request):
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration
    from transformers.trainer_utils import align_special_tokens

    path = request.getfixturevalue(ckpt)
    handler = _Records()
    library = logging.getLogger("transformers")
    library.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            processor = AutoProcessor.from_pretrained(path)
            model = Qwen3VLForConditionalGeneration.from_pretrained(path)
            before = (model.config.to_dict(), model.generation_config.to_dict())
            align_special_tokens(model, processor)  # what Trainer.train() runs first
    finally:
        library.removeHandler(handler)
    assert [r.getMessage() for r in handler.records] == []
    assert [str(w.message) for w in caught] == []
    assert (model.config.to_dict(), model.generation_config.to_dict()) == before
    tok, text, gen = processor.tokenizer, model.config.text_config, model.generation_config
    assert text.pad_token_id == gen.pad_token_id == tok.pad_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    assert tok.eos_token_id == text.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token_id in gen.eos_token_id
    # the PAD id is declared in the files only: the weights were drawn without a padding row (it is not zero)
    assert model.model.language_model.embed_tokens.weight[tok.pad_token_id].abs().sum() > 0


def test_composing_the_training_configs_warns_about_nothing():
    from hydra import compose, initialize_config_dir

    experiments = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
            for name in experiments:
                compose(config_name="config", overrides=[f"experiment={name}"], return_hydra_config=True)
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []


@pytest.mark.parametrize("mode", ["true", "auto", "false"])
def test_training_arguments_are_built_without_warnings(mode, tiny_ckpt, tmp_path, monkeypatch):
    """`trainer.gradient_checkpointing` reaches the Trainer under the name this transformers reads, silently."""
    from hydra import compose, initialize_config_dir

    for var in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):  # one process, whatever ran before
        monkeypatch.delenv(var, raising=False)

    from streaming_vlm.training.config import plan, training_arguments

    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = compose(config_name="config", overrides=[
            "experiment=smoke_stage1", f"trainer.gradient_checkpointing={mode}", f"output_dir={tmp_path / 'run'}",
            f"model.name_or_path={tiny_ckpt}", f"data.root={tmp_path / 'data'}"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        args = training_arguments(cfg, plan(cfg), [])
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []
    assert args.gradient_checkpointing is (mode != "false")
    if mode != "false":
        assert (getattr(args, "activation_checkpointing_kwargs", None) or args.gradient_checkpointing_kwargs) \
            == {"use_reentrant": False}


def test_deepspeed_import_on_a_cpu_host_prints_nothing(tmp_path):
    """accelerate imports DeepSpeed inside every `save_pretrained`; on a host without CUDA its import logs "Setting
    accelerator to CPU ..." unless our package is imported first (as every entry point does). Other DeepSpeed
    warnings still pass."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA host: DeepSpeed picks cuda and has no CPU notice to print")
    code = ("import streaming_vlm, deepspeed, logging; from deepspeed.accelerator import get_accelerator; "
            "print(get_accelerator().device_name()); logging.getLogger('DeepSpeed').warning('still heard')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(CONFIGS.parent)})
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]  # DeepSpeed logs to stdout
    assert lines[0] == "cpu" and len(lines) == 2 and lines[1].endswith("still heard"), lines
