"""Real-time streaming inference: bounded KV cache, contiguous mRoPE, the CLI, the eval callback's entry point.

    from streaming_vlm.inference import StreamingEngine, run_stream, streaming_inference

- `run_stream(model, processor, video_path, config, start=0, end=None) -> list[segment]`: one video through a
  fresh engine (what the training eval callback calls);
- `StreamingEngine(model, processor, config)`: `start()`, `step(second)`, `ask(question)`;
- `streaming_inference(config) -> results`: the CLI's Python API (loads the model, writes VTT/JSON).

Modules: config (StreamingConfig), cache (StreamingCache + segments), eviction (the policy), engine, frames
(frame sources; `open_source` picks a file or a live source), live_source (HLS, RTSP, V4L2, stdin), output
(VTT / JSON lines), timing, inference (CLI), testvideo (mp4 writer for tests/bench).
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
