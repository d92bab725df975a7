"""Demo step: decode a few seconds of one generated video through the project's own reader and template."""

from __future__ import annotations

import argparse
import re

from streaming_vlm.data.stream_template import StreamTemplate, VisionBudget
from streaming_vlm.data.video import VideoReader
from streaming_vlm.errors import cli_entry
from streaming_vlm.model.loading import load_processor


@cli_entry
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--video", required=True)
    ap.add_argument("--model_path", required=True)
    ap.add_argument("--start", type=float, default=10.0)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--fps", type=float, default=2.0)
    args = ap.parse_args(argv)
    reader = VideoReader(args.video, fps=args.fps)
    seconds = reader.seconds(args.start, args.start + args.seconds)
    print(f"{args.video}: {reader.duration:.1f} s at {reader.native_fps:g} native fps; read at {args.fps:g} fps")
    for s in seconds:
        times = ", ".join(f"{t:.2f}" for t in s.frame_times)
        print(f"  second {s.start:.0f}-{s.end:.0f}: {len(s.frames)} frames {tuple(s.frames.shape[1:])} at [{times}] s")
    template = StreamTemplate(load_processor(args.model_path),
                              budget=VisionBudget(min_pixels=32 * 32, max_pixels=160 * 96))
    for s in seconds:
        s.text = ""
    enc = template.encode_window("", seconds)
    text = template.tokenizer.decode(enc.input_ids)
    stamps = re.findall(r"<[\d.]+ seconds>", text)
    print(f"  encoded {len(enc)} tokens, video grids {enc.video_grid_thw.tolist()}, stamps {stamps}")


if __name__ == "__main__":
    main()
