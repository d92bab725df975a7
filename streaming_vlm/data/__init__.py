"""Commentated video -> training samples, the same way for training and inference.

Read in this order:
- `records.py`         `StreamRecord`, the one record every source maps to: a video, a time span, timed words
- `sources.py`         JSONL files (with seek offsets) and Arrow data sets -> records, with random access
- `chunker.py`         records -> windows: overlapped windows of whole games (stage 1), whole clips (stage 2)
- `video.py`           strict-fps frame reading with absolute timestamps
- `stream_template.py` seconds of (frames, words) -> tokens, labels, vision inputs, mRoPE positions; the inference
                       engine encodes every second with it too
- `dataset.py`         chunks -> encoded samples; `collator.py` batches them; `bad_samples.py` counts what is skipped
"""
