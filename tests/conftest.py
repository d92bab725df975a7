"""Shared fixtures: one tiny checkpoint per test session, built by the real factory."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    from streaming_vlm.model.tiny import build_checkpoint

    return build_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-qwen3vl", size="tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_processor(tiny_ckpt):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_ckpt)


@pytest.fixture(scope="session")
def hub_like_ckpt(tmp_path_factory):
    """The tiny weights (seed 0) with the hub's Qwen3-VL Instruct chat template behaviour and sampling defaults."""
    from streaming_vlm.model.tiny import build_checkpoint

    return build_checkpoint(tmp_path_factory.mktemp("hub") / "hub-like-qwen3vl", size="tiny", seed=0, hub_like=True)
