"""Real-time streaming inference: bounded KV cache, contiguous mRoPE, the CLI, the eval callback's entry point.

- `run_stream(model, processor, video_path, config)`: one video through a fresh engine (the eval callback's call);
- `StreamingEngine(model, processor, config)`: `start()`, `step(second)`, `ask(question)`;
- `streaming_inference(config)`: the CLI's Python API.

One second, in reading order: frames.py / live_source.py (source) -> streaming_vlm/data/stream_template.py ->
engine.py (evict, prefill) -> graph_decode.py (the reply) -> eviction.py + cache.py -> output.py.
"""

_EXPORTS = {
    "StreamingConfig": "streaming_vlm.inference.config",
    "StreamingCache": "streaming_vlm.inference.cache",
    "StreamingPolicy": "streaming_vlm.inference.eviction",
    "StreamingEngine": "streaming_vlm.inference.engine",
    "run_stream": "streaming_vlm.inference.engine",
    "VideoFrameSource": "streaming_vlm.inference.frames",
    "LiveFrameSource": "streaming_vlm.inference.live_source",
    "open_source": "streaming_vlm.inference.frames",
    "streaming_inference": "streaming_vlm.inference.inference",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):  # lazy: importing the package does not import torch/transformers
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
