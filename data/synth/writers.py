"""Output formats: the per-game event log and track, LiveCC conversations with a seeks sidecar, Inf-Stream-Eval rows.

* `X_with_seeks.jsonl`: one LiveCC conversation per line (see `livecc_conversation`); `X_seeks.jsonl`: a single
  JSON list with the byte offset of the start of each line of `X_with_seeks.jsonl`.
* Inf-Stream-Eval row: {"video", "title", "content": [[start, end, text] per commentary line], "preasr": ""}.
* events JSON: {"seed", "duration", "fps", "width", "height", "title", "video", "final_score",
  "events": [{"t", "end", "type", "team", "score", "xy" (pixels), "pos" (normalised), ...type-specific}],
  "lines": [{"start", "end", "text", "event_index", "kind", "words": [[s, e, w], ...]}]}
* track npz (one row per native frame): ball_xy (N,2) and players_xy (N,P,2) pixel centres (x, y), team_ids (P,)
  0 Red / 1 Blue, is_keeper (P,), ball_visible / players_visible (N,) (False during half-time), possession (N,)
  (0 Red, 1 Blue, -1 nobody), score (N,2) as shown on the scoreboard, fps, width, height.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from streaming_vlm.output_files import write_atomic

from .game import PLAYER_KEEPER, PLAYER_TEAM, Game
from .render import Layout


def livecc_conversation(video: str, start: float, end: float, words: list, previous: str = "",
                        title: str = "") -> list[dict[str, Any]]:
    """One LiveCC-format conversation: a user turn with the video span and an assistant text stream."""
    return [
        {"role": "user", "content": [
            {"type": "video", "video": video, "video_start": round(float(start), 2), "video_end": round(float(end), 2)},
            {"type": "text", "text": "", "previous": previous, "title": title},
        ]},
        {"role": "assistant", "content": [
            {"type": "text_stream", "text_stream": [[round(float(s), 2), round(float(e), 2), str(w)] for s, e, w in words]},
        ]},
    ]


def inf_eval_row(video: str, title: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
    return {"video": video, "title": title,
            "content": [[round(ln["start"], 2), round(ln["end"], 2), ln["text"]] for ln in lines], "preasr": ""}


def write_jsonl_with_seeks(path: str | Path, seeks_path: str | Path, rows: Iterable[Any]) -> list[int]:
    """Write rows as JSON lines and the sidecar list of each line's byte offset. Returns the offsets."""
    buf = bytearray()
    offsets: list[int] = []
    for row in rows:
        offsets.append(len(buf))
        buf += json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n"
    write_atomic(Path(path), bytes(buf))
    write_atomic(Path(seeks_path), (json.dumps(offsets) + "\n").encode("utf-8"))
    return offsets


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    data = b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in rows)
    write_atomic(Path(path), data)


def read_jsonl_line(path: str | Path, seeks_path: str | Path, index: int) -> Any:
    """Random access to line `index` of a `_with_seeks.jsonl` file through its seeks sidecar."""
    offsets = json.loads(Path(seeks_path).read_text())
    with open(path, "rb") as fh:
        fh.seek(offsets[index])
        return json.loads(fh.readline())


def write_json(path: str | Path, obj: Any) -> None:
    write_atomic(Path(path), (json.dumps(obj, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))


def events_document(game: Game, layout: Layout, lines: list[dict[str, Any]], video: str, title: str) -> dict:
    events = []
    for ev in game.events:
        e = dict(ev)
        xy = layout.to_px(np.asarray(ev["pos"], dtype=np.float64))
        e["xy"] = [round(float(xy[0]), 2), round(float(xy[1]), 2)]
        events.append(e)
    return {
        "seed": game.seed, "duration": game.duration, "fps": game.fps, "width": layout.width,
        "height": layout.height, "title": title, "video": video, "n_frames": game.n_frames,
        "final_score": [int(v) for v in game.score[-1]], "events": events, "lines": lines,
    }


def write_track(path: str | Path, game: Game, layout: Layout) -> None:
    path = Path(path)
    tmp = path.with_name(path.stem + ".part.npz")
    np.savez_compressed(
        tmp,
        ball_xy=layout.to_px(game.ball).astype(np.float32),
        players_xy=layout.to_px(game.players).astype(np.float32),
        team_ids=PLAYER_TEAM.astype(np.int8),
        is_keeper=PLAYER_KEEPER.copy(),
        ball_visible=game.ball_visible,
        players_visible=game.players_visible,
        possession=game.possession.astype(np.int8),
        score=game.score.astype(np.int16),
        fps=np.float64(game.fps),
        width=np.int32(layout.width),
        height=np.int32(layout.height),
    )
    os.replace(tmp, path)
