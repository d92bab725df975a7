"""StreamingVLM for Qwen3-VL: streaming SFT on overlapped chunks and real-time inference with a bounded KV cache."""

__version__ = "0.1.0"
