"""Procedurally generated football streams: real mp4s plus grounded, word-timed commentary.

    from data.synth import generate_game
    info = generate_game(7, 120.0, "/tmp/ds", "train")      # -> paths (relative to out_dir) and the commentary

writes  videos/train/game_000007.mp4, events/train/game_000007.json, events/train/game_000007_track.npz.
`data.synthetic.generate_dataset` builds a whole dataset (splits, clips, JSONL files, manifest) on top of this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .commentary import build_commentary, words_of
from .game import MIN_DURATION, TEAM_NAMES, Game, simulate
from .render import SIZE_PRESETS, Layout, encode_game
from .writers import events_document, write_json, write_track

__all__ = [
    "MIN_DURATION", "SIZE_PRESETS", "TEAM_NAMES", "Game", "Layout", "build_commentary", "game_title",
    "generate_game", "resolve_size", "simulate", "words_of",
]


def game_title(seed: int) -> str:
    return f"Red vs Blue, game {seed}"


def resolve_size(size: str | None = "tiny", width: int | None = None, height: int | None = None) -> tuple[int, int]:
    """A preset name and/or explicit width/height -> (width, height). Raises ValueError on bad input."""
    if size is not None and size not in SIZE_PRESETS:
        raise ValueError(f"unknown size preset {size!r} (choose from {', '.join(SIZE_PRESETS)})")
    w, h = SIZE_PRESETS[size or "tiny"]
    if width is not None:
        w = int(width)
    if height is not None:
        h = int(height)
    Layout(w, h)  # validates
    return w, h


def generate_game(seed: int, duration: float, out_dir: str | Path, split: str, size: str = "tiny",
                  width: int | None = None, height: int | None = None, native_fps: float = 24.0, crf: int = 18,
                  threads: int = 1, event_rate: float = 1.0,
                  event_captions: bool = False, strict_event_words: bool = False) -> dict[str, Any]:
    """Simulate, narrate, render and write one game. Returns its paths (relative to out_dir) and commentary."""
    w, h = resolve_size(size, width, height)
    layout = Layout(w, h)
    out_dir = Path(out_dir)
    name = f"game_{int(seed):06d}"
    video_rel = f"videos/{split}/{name}.mp4"
    events_rel = f"events/{split}/{name}.json"
    track_rel = f"events/{split}/{name}_track.npz"
    for rel in (video_rel, events_rel):
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)

    game = simulate(int(seed), float(duration), float(native_fps), float(event_rate))
    lines = build_commentary(game, strict_event_words=strict_event_words)
    title = game_title(int(seed))
    n_frames = encode_game(game, layout, out_dir / video_rel, crf=crf, threads=threads, captions=event_captions)
    write_json(out_dir / events_rel, events_document(game, layout, lines, video_rel, title))
    write_track(out_dir / track_rel, game, layout)
    return {
        "seed": int(seed), "split": split, "title": title, "duration": float(duration), "fps": float(native_fps),
        "width": w, "height": h, "n_frames": n_frames, "video": video_rel, "events": events_rel,
        "track": track_rel, "video_path": str(out_dir / video_rel), "events_path": str(out_dir / events_rel),
        "track_path": str(out_dir / track_rel), "final_score": [int(v) for v in game.score[-1]],
        "lines": lines, "words": words_of(lines),
    }
