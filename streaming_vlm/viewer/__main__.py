"""`python -m streaming_vlm.viewer VIDEO CAPTIONS.vtt --out page.html`: the viewer page for a finished run.

The page embeds the captions and refers to the video by its path relative to the page, so keep the two together.
Prints the page's path.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import quote

from streaming_vlm.errors import UserError, cli_entry
from streaming_vlm.output_files import write_atomic
from streaming_vlm.viewer.page import render


def read_captions(path: Path) -> tuple[str, int]:
    """The VTT's text and its number of cues; a UserError unless it is a WebVTT file."""
    if not path.is_file():
        raise UserError(f"captions not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"captions are not UTF-8 text: {path}") from None
    if not text.lstrip("\ufeff").startswith("WEBVTT"):
        raise UserError(f"not a WebVTT file (no WEBVTT header): {path}")
    return text, sum("-->" in line for line in text.splitlines())


def video_url(video: Path, page: Path) -> str:
    """The video's URL as seen from the page: relative when they share a drive, else a file:// URL."""
    try:
        rel = os.path.relpath(video.resolve(), page.resolve().parent)
    except ValueError:  # another drive (Windows)
        return video.resolve().as_uri()
    return quote(Path(rel).as_posix())


def write_page(video: str | os.PathLike, captions: str | os.PathLike, out: str | os.PathLike,
               title: str | None = None) -> tuple[Path, int]:
    video, captions, out = Path(video), Path(captions), Path(out)
    if not video.is_file():
        raise UserError(f"video not found: {video}")
    if not out.parent.is_dir():
        raise UserError(f"output folder does not exist: {out.parent}")
    text, n = read_captions(captions)
    page = render(title or video.name, video_url(video, out), text)
    write_atomic(out, page)  # never a half-written page
    return out, n


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m streaming_vlm.viewer",
                                description="Write the caption viewer page: the video beside its cues.")
    p.add_argument("video", help="the video file the captions were made for")
    p.add_argument("captions", help="the WebVTT file (--output_path of the inference CLI)")
    p.add_argument("--out", required=True, help="the HTML page to write")
    p.add_argument("--title", default=None, help="page title (default: the video's file name)")
    args = p.parse_args(argv)
    out, n = write_page(args.video, args.captions, args.out, args.title)
    print(f"viewer page: {out} ({n} cues)", file=sys.stderr)
    print(out)


if __name__ == "__main__":
    main()
