"""Real-time streaming inference: bounded KV cache, contiguous mRoPE, the CLI, the eval callback's entry point.

    from streaming_vlm.inference import StreamingEngine, run_stream, streaming_inference

- `run_stream(model, processor, video_path, config, start=0, end=None) -> list[segment]`: one video through a
  fresh engine (what the training eval callback calls);
- `StreamingEngine(model, processor, config)`: `start()`, `step(second)`, `ask(question)`;
- `streaming_inference(config) -> results`: the CLI's Python API (loads the model, writes VTT/JSON).

One second of stream, in reading order: frames (frame sources; video_file reads files ahead on a thread;
live_source reads HLS, RTSP, V4L2 and stdin in real time; `open_source` picks one) ->
the stream template (streaming_vlm/data) -> engine (its plan; prefill through model/text_step.py) -> graph_decode
(the reply) -> eviction (the policy) + cache (StreamingCache, segments, re-rotation; rotation_kernel on CUDA) ->
output (VTT / JSON lines). Also: config (StreamingConfig), timing, inference (the CLI), transfer.
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
