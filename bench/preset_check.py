"""The seed's Python API on the GPU: `streaming_inference(get_cuda_config(model_size=..., video_path=...,
model_path=...))` on a stock PyTorch install (no flash-attn), printing one result line."""

import argparse
import time

from streaming_vlm.cuda_config import get_cuda_config
from streaming_vlm.inference.inference import streaming_inference

p = argparse.ArgumentParser()
p.add_argument("--size", default="2b")
p.add_argument("--video", required=True)
p.add_argument("--model_path", required=True)
p.add_argument("--end", type=float, default=60.0)
args = p.parse_args()
config = get_cuda_config(model_size=args.size, video_path=args.video, model_path=args.model_path, end=args.end)
t0 = time.perf_counter()
result = streaming_inference(config)
wall = time.perf_counter() - t0
segments = result["segments"]
print(f"preset {args.size}: attn {config.get('attn_implementation')}, {len(segments)} seconds streamed, "
      f"{sum(s['frames'] for s in segments)} frames, wall {wall:.1f} s incl. load and compile")
