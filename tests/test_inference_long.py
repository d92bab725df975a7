"""Bounded memory on a long stream: cache tokens, process RSS and positions stay flat after warm-up.

The issue asks for a 2-hour stream; on this project's 2 shared CPU cores the tiny model runs ~12 stream-seconds per
wall-second in fast mode, so the default is a 10-minute stream (600 seconds: 2 minutes of warm-up, then 16 samples
over 8 minutes, under a minute of test time; `make test` must stay within 10 minutes). Set
STREAMING_TEST_MINUTES=120 for the full two hours (about 10 minutes here).

Fast mode: a real 64×64 H.264 file at 1 fps decoded by decord (each second's lone frame repeated into one temporal
patch of 2×2 vision tokens), a 4-second vision window, 16+32 text tokens, 2 new tokens per second, sampling on.
Every eviction path runs every second: vision drop, fold, text trim, key rotation.
"""

from __future__ import annotations

import os

import pytest

from streaming_vlm.inference.engine import StreamingEngine
from streaming_vlm.inference.frames import VideoFrameSource
from tests.fixture_video import write_video
from streaming_vlm.model.loading import load_model
from tests.cache_check import check_cache

MINUTES = float(os.environ.get("STREAMING_TEST_MINUTES", "10"))
FAST = {"window_size": 4, "text_sink": 16, "text_sliding_window": 32, "max_new_tokens": 2, "fps": 1,
        "min_pixels": 64 * 64, "max_pixels": 64 * 64, "seed": 0}


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.slow
def test_long_stream_memory_is_flat(tiny_ckpt, tiny_processor, tmp_path):
    seconds = int(MINUTES * 60)
    video = write_video(tmp_path / "long.mp4", seconds=seconds, fps=1, width=64, height=64)
    model = load_model(tiny_ckpt)
    engine = StreamingEngine(model, tiny_processor, FAST)
    engine.start(previous_text="Welcome to the match. " * 20)
    bound = engine.budget["bound"]
    warmup = max(120, seconds // 10)
    samples = []  # (second, cache tokens, next position, physical + unwritten tokens, rss MB)
    for i, second in enumerate(VideoFrameSource(video, fps=1)):
        engine.step(second)
        if i >= warmup and i % 30 == 0:
            layer = engine.cache.layers[0]
            samples.append((i, engine.cache.num_tokens, engine.cache.next_position,
                            layer.keys.shape[-2] + len(engine.cache.unwritten), _rss_mb()))
    check_cache(engine.cache)
    assert i == seconds - 1
    tokens = [s[1] for s in samples]
    positions = [s[2] for s in samples]
    rss = [s[4] for s in samples]
    assert all(s[1] == s[3] for s in samples)  # the bookkeeping is the physical cache
    # flat up to reply length and timestamp digits ("Time=99.0-100.0s", "<999.5 seconds>" gain a digit at 100 s and
    # 1000 s, two stamps per second in the window)
    assert max(tokens) <= bound and max(tokens) - min(tokens) <= FAST["max_new_tokens"] + 4 * FAST["window_size"] + 8
    assert max(positions) <= bound, "contiguous positions must stay bounded"
    half = len(rss) // 2
    growth = sum(rss[half:]) / len(rss[half:]) - sum(rss[:half]) / half
    assert max(rss) - rss[0] < 16 and growth < 4, f"RSS after warm-up: {rss[0]:.0f} -> {max(rss):.0f} MB"
    assert engine.cache.tokens_evicted > seconds * 10 and engine.cache.rotations >= seconds - warmup

    # The ablation on the same file: native positions grow without bound (here past the contiguous bound within
    # two minutes), while the cache holds the same number of tokens.
    native = StreamingEngine(model, tiny_processor, {**FAST, "pos_mode": "native"})
    native.start(previous_text="Welcome to the match. " * 20)
    for second in VideoFrameSource(video, fps=1, end=120):
        native.step(second)
    assert native.cache.next_position > 3 * bound and native.cache.num_tokens <= bound
