"""The caption viewer: the video beside its commentary cues, as one HTML page.

- `python -m streaming_vlm.viewer VIDEO CAPTIONS.vtt --out page.html` writes it for a finished run (page.py);
- the inference CLI's `--serve PORT` serves the same page on loopback and pushes cues to it as they are made
  (server.py).
"""
