"""Real-time streaming inference: bounded KV cache, contiguous mRoPE, the CLI, the eval callback's entry point.

    from streaming_vlm.inference import StreamingEngine, run_stream, streaming_inference

- `run_stream(model, processor, video_path, config, start=0, end=None) -> list[segment]`: one video through a
  fresh engine (what the training eval callback calls);
- `StreamingEngine(model, processor, config)`: `start()`, `step(second)`, `ask(question)`;
- `streaming_inference(config) -> results`: the CLI's Python API (loads the model, writes VTT/JSON).

One second of stream, in reading order: source (frames.py: files read ahead on a thread; live_source.py: HLS, RTSP,
V4L2, stdin in real time; both sampled by training's rule; `open_source` picks one) -> template
(streaming_vlm/data/stream_template.py) -> engine.py (evict, prefill through model/text_step.py, its plan) ->
graph_decode.py (the reply) -> eviction.py (the policy) + cache.py (segments, re-rotation; rotation_kernel.py on
CUDA) -> output.py (VTT / JSON lines). Also: config.py, timing.py, transfer.py, inference.py (the CLI).
"""

_EXPORTS = {
    "StreamingConfig": "streaming_vlm.inference.config",
    "StreamingCache": "streaming_vlm.inference.cache",
    "StreamingPolicy": "streaming_vlm.inference.eviction",
    "StreamingEngine": "streaming_vlm.inference.engine",
    "run_stream": "streaming_vlm.inference.engine",
    "FrameSource": "streaming_vlm.inference.frames",
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
