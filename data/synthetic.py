"""Generate a synthetic football-commentary dataset: real H.264 videos + word-timed commentary in LiveCC format.

    python -m data.synthetic --out DIR [--train-games 6 --eval-games 2 --duration 180 --eval-duration 180
                                        --clips 20 --seed 0 --long-games 0 --long-duration 3600
                                        --size tiny|small|medium [--width W --height H] --native-fps 24 --workers 2
                                        --event-rate 1 --event-captions --strict-event-words]

Layout of DIR:
    videos/{train,eval,long}/game_{seed:06d}.mp4
    events/{split}/game_{seed:06d}.json          event log + commentary lines (with per-word times)
    events/{split}/game_{seed:06d}_track.npz     per-frame ball/player pixel positions
    {train,eval,long}_with_seeks.jsonl + {split}_seeks.jsonl   one LiveCC conversation per whole game
    clips_with_seeks.jsonl + clips_seeks.jsonl   stage-2 clips (16-64 s, non-overlapping, cut from train games)
    eval_inf.jsonl                               Inf-Stream-Eval rows for the eval split
    manifest.json                                what was generated

Seeds: game seeds come from disjoint ranges derived from --seed S: train game i has seed S*1000+i (i < 500), eval game
i has S*1000+500+i (i < 400), long game i has S*1000+900+i (i < 100). Any duration >= 10 s is accepted for every split;
long games are meant to be 1800-10800 s (infinite-stream tests), shorter ones are fine for quick tests.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from data.synth import MIN_DURATION, SIZE_PRESETS, game_title, generate_game, resolve_size
from data.synth.writers import inf_eval_row, livecc_conversation, write_json, write_jsonl, write_jsonl_with_seeks
from streaming_vlm.errors import UserError, cli_entry

SPLITS = ("train", "eval", "long")
SEED_OFFSETS = {"train": 0, "eval": 500, "long": 900}
SEED_LIMITS = {"train": 500, "eval": 400, "long": 100}
MAX_DURATION = 6 * 3600.0
CLIP_MIN, CLIP_MAX = 16.0, 64.0
MAX_WORKERS = 16


def split_seeds(seed: int, split: str, n: int) -> list[int]:
    """The game seeds of a split (see the module docstring)."""
    return [int(seed) * 1000 + SEED_OFFSETS[split] + i for i in range(int(n))]


def _game_job(kw: dict[str, Any]) -> dict[str, Any]:
    return generate_game(**kw)


def _check_count(name: str, value: int, limit: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise UserError(f"{name} must be an integer, got {value!r}")
    if value < 0 or value > limit:
        raise UserError(f"{name} must be between 0 and {limit}, got {value}")
    return int(value)


def _check_duration(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number of seconds, got {value!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise UserError(f"{name} must be a positive number of seconds, got {value:g}")
    if value < MIN_DURATION or value > MAX_DURATION:
        raise UserError(f"{name} must be between {MIN_DURATION:g} and {MAX_DURATION:g} seconds, got {value:g}")
    return value


def _prepare_out(out: str | Path) -> Path:
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write_test_{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except FileExistsError:
        raise UserError(f"output path {out} exists and is not a directory") from None
    except OSError as err:
        raise UserError(f"cannot write to output directory {out}: {err.strerror or err}") from None
    return out


def _snap_out_of_words(t: float, words: list, towards_start: bool = True) -> float:
    """Move a cut point that falls inside a word to that word's start."""
    for s, e, _ in words:
        if s < t < e:
            return s
        if s >= t:
            break
    return t


def plan_clips(games: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """Pick n non-overlapping 16-64 s spans from the given (train) games, dense in commentary, cut between words."""
    if n <= 0 or not games:
        return []
    rng = np.random.default_rng([int(seed), 2024])
    taken: dict[int, list[tuple[float, float]]] = {g["seed"]: [] for g in games}
    clips: list[dict[str, Any]] = []
    attempts = 0
    while len(clips) < n and attempts < 60 * n + 100:
        attempts += 1
        g = games[(len(clips) + attempts) % len(games)]
        dur = g["duration"]
        if dur < CLIP_MIN:
            continue
        length = float(rng.uniform(CLIP_MIN, min(CLIP_MAX, dur)))
        start = float(rng.uniform(0.0, dur - length))
        words = g["words"]
        start = round(_snap_out_of_words(start, words), 2)
        end = round(_snap_out_of_words(min(start + length, dur), words), 2)
        if not (CLIP_MIN <= end - start <= CLIP_MAX) or end > dur:
            continue
        if any(start < b and a < end for a, b in taken[g["seed"]]):
            continue
        inside = [w for w in words if w[0] >= start and w[1] <= end]
        if len(inside) < 1.5 * (end - start):  # stage-2 clips are the dense, high-quality ones
            continue
        previous = " ".join(w[2] for w in words if w[1] <= start)
        taken[g["seed"]].append((start, end))
        clips.append({"seed": g["seed"], "video": g["video"], "title": g["title"], "start": start, "end": end,
                      "words": inside, "previous": previous})
    clips.sort(key=lambda c: (c["seed"], c["start"]))
    return clips



def _number_between(value, what: str, low: float, high: float) -> float:
    """`value` as a finite float in [low, high], or a UserError naming `what`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be a number, got {value!r}") from None
    if not (np.isfinite(number) and low <= number <= high):
        raise UserError(f"{what} must be between {low:g} and {high:g}, got {value!r}")
    return number

def generate_dataset(out: str | Path, train_games: int = 6, eval_games: int = 2, duration: float = 180.0,
                     eval_duration: float | None = None, clips: int = 20, seed: int = 0, long_games: int = 0,
                     long_duration: float = 3600.0, size: str | None = "tiny", width: int | None = None,
                     height: int | None = None, native_fps: float = 24.0, workers: int = 2, crf: int = 18,
                     event_rate: float = 1.0, event_captions: bool = False,
                     strict_event_words: bool = False, log=None) -> dict[str, Any]:
    """Generate the whole dataset under `out` and return the manifest (also written to out/manifest.json).

    Bad arguments raise `UserError` with a one-line message.
    """
    t_start = time.time()
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0 or seed > 10**9:
        raise UserError(f"seed must be an integer between 0 and {10**9}, got {seed!r}")
    counts = {
        "train": _check_count("train games", train_games, SEED_LIMITS["train"]),
        "eval": _check_count("eval games", eval_games, SEED_LIMITS["eval"]),
        "long": _check_count("long games", long_games, SEED_LIMITS["long"]),
    }
    n_clips = _check_count("clips", clips, 100000)
    durations = {
        "train": _check_duration("duration", duration),
        "eval": _check_duration("eval duration", duration if eval_duration is None else eval_duration),
        "long": _check_duration("long duration", long_duration),
    }
    if n_clips and not counts["train"]:
        raise UserError("clips are cut from train games: use --train-games >= 1 or --clips 0")
    if size is not None and size not in SIZE_PRESETS:
        raise UserError(f"unknown size preset {size!r} (choose from {', '.join(SIZE_PRESETS)})")
    try:
        w, h = resolve_size(size, width, height)
    except ValueError as err:
        raise UserError(str(err)) from None
    fps = _number_between(native_fps, "native fps", 1.0, 120.0)
    event_rate = _number_between(event_rate, "event rate", 0.1, 10.0)
    if not isinstance(workers, (int, np.integer)) or not 1 <= workers <= MAX_WORKERS:
        raise UserError(f"workers must be between 1 and {MAX_WORKERS}, got {workers!r}")
    out = _prepare_out(out)

    jobs = []
    for split in SPLITS:
        for s in split_seeds(seed, split, counts[split]):
            jobs.append({"seed": s, "duration": durations[split], "out_dir": str(out), "split": split,
                         "size": size, "width": w, "height": h, "native_fps": fps, "crf": int(crf), "threads": 1,
                         "event_rate": event_rate, "event_captions": bool(event_captions),
                         "strict_event_words": bool(strict_event_words)})
    # biggest first so the pool stays balanced
    order = sorted(range(len(jobs)), key=lambda j: -jobs[j]["duration"])
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    n_workers = min(int(workers), max(len(jobs), 1))
    if n_workers <= 1 or len(jobs) <= 1:
        for j in order:
            results[j] = _game_job(jobs[j])
            if log:
                log(f"  {results[j]['video']}")
    else:
        ctx = mp.get_context("spawn")  # safe next to threads (torch, decord) in the parent
        with ctx.Pool(n_workers) as pool:
            for j, res in zip(order, pool.imap(_game_job, [jobs[j] for j in order])):
                results[j] = res
                if log:
                    log(f"  {res['video']}")
    games: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for res in results:
        assert res is not None
        games[res["split"]].append(res)

    for split in SPLITS:
        convs = [livecc_conversation(g["video"], 0.0, g["duration"], g["words"], "", g["title"]) for g in games[split]]
        write_jsonl_with_seeks(out / f"{split}_with_seeks.jsonl", out / f"{split}_seeks.jsonl", convs)
    clip_list = plan_clips(games["train"], n_clips, seed)
    write_jsonl_with_seeks(out / "clips_with_seeks.jsonl", out / "clips_seeks.jsonl",
                           [livecc_conversation(c["video"], c["start"], c["end"], c["words"], c["previous"], c["title"])
                            for c in clip_list])
    write_jsonl(out / "eval_inf.jsonl", [inf_eval_row(g["video"], g["title"], g["lines"]) for g in games["eval"]])

    manifest = {
        "generator": "data.synthetic",
        "format_version": 1,
        "args": {"train_games": counts["train"], "eval_games": counts["eval"], "long_games": counts["long"],
                 "duration": durations["train"], "eval_duration": durations["eval"],
                 "long_duration": durations["long"], "clips": n_clips, "seed": int(seed), "size": size,
                 "width": w, "height": h, "native_fps": fps, "workers": int(workers), "crf": int(crf),
                 "event_rate": event_rate, "event_captions": bool(event_captions),
                 "strict_event_words": bool(strict_event_words)},
        "seed_scheme": {"train": "seed*1000+i", "eval": "seed*1000+500+i", "long": "seed*1000+900+i"},
        "resolution": {"size": size if (w, h) == SIZE_PRESETS.get(size or "", None) else "custom",
                       "width": w, "height": h},
        "native_fps": fps,
        "splits": {
            split: {
                "duration": durations[split],
                "seeds": [g["seed"] for g in games[split]],
                "jsonl": f"{split}_with_seeks.jsonl",
                "seeks": f"{split}_seeks.jsonl",
                "games": [{"seed": g["seed"], "title": g["title"], "video": g["video"], "events": g["events"],
                           "track": g["track"], "duration": g["duration"], "n_frames": g["n_frames"],
                           "lines": len(g["lines"]), "words": len(g["words"]), "final_score": g["final_score"]}
                          for g in games[split]],
            } for split in SPLITS
        },
        "clips": {"requested": n_clips, "count": len(clip_list), "jsonl": "clips_with_seeks.jsonl",
                  "seeks": "clips_seeks.jsonl",
                  "spans": [{"seed": c["seed"], "video": c["video"], "start": c["start"], "end": c["end"],
                             "words": len(c["words"])} for c in clip_list]},
        "eval_inf": "eval_inf.jsonl",
        "counts": {"train_games": len(games["train"]), "eval_games": len(games["eval"]),
                   "long_games": len(games["long"]), "clips": len(clip_list),
                   "words": {s: sum(len(g["words"]) for g in games[s]) for s in SPLITS}},
    }
    write_json(out / "manifest.json", manifest)
    if log:
        log(f"wrote {sum(counts.values())} games and {len(clip_list)} clips to {out} in {time.time() - t_start:.1f}s")
    return manifest


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        raise UserError(f"{message} (see --help)")


def _int_arg(name: str):
    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
    return parse


def _float_arg(name: str):
    def parse(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m data.synthetic", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--train-games", type=_int_arg("--train-games"), default=6)
    p.add_argument("--eval-games", type=_int_arg("--eval-games"), default=2)
    p.add_argument("--duration", type=_float_arg("--duration"), default=180.0, help="train game length, seconds")
    p.add_argument("--eval-duration", type=_float_arg("--eval-duration"), default=None,
                   help="eval game length, seconds (default: --duration)")
    p.add_argument("--clips", type=_int_arg("--clips"), default=20, help="stage-2 clips cut from train games")
    p.add_argument("--seed", type=_int_arg("--seed"), default=0, help="base seed (>= 0)")
    p.add_argument("--long-games", type=_int_arg("--long-games"), default=0)
    p.add_argument("--long-duration", type=_float_arg("--long-duration"), default=3600.0,
                   help="long game length, seconds (meant to be 1800-10800)")
    p.add_argument("--size", default="tiny", help=f"resolution preset: {', '.join(f'{k}={w}x{h}' for k, (w, h) in SIZE_PRESETS.items())}")
    p.add_argument("--width", type=_int_arg("--width"), default=None, help="override the preset width (even)")
    p.add_argument("--height", type=_int_arg("--height"), default=None, help="override the preset height (even)")
    p.add_argument("--native-fps", type=_float_arg("--native-fps"), default=24.0)
    p.add_argument("--workers", type=_int_arg("--workers"), default=2, help="processes rendering games in parallel")
    p.add_argument("--crf", type=_int_arg("--crf"), default=18, help="x264 quality (lower = better)")
    p.add_argument("--event-rate", type=_float_arg("--event-rate"), default=1.0,
                   help="how often teams attack and shoot, relative to the default match (0.1-10; 5 gives about "
                        "twice the goals, saves and corners per minute)")
    p.add_argument("--event-captions", action="store_true",
                   help="draw a broadcast-style caption band for 2.5 s after each goal, save and corner")
    p.add_argument("--strict-event-words", action="store_true",
                   help="name goals, saves and corners only in the lines of those events (not in statistics, "
                        "memory and filler lines)")
    return p


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 <= args.crf <= 51:
        raise UserError(f"--crf must be between 0 and 51, got {args.crf}")
    manifest = generate_dataset(
        args.out, train_games=args.train_games, eval_games=args.eval_games, duration=args.duration,
        eval_duration=args.eval_duration, clips=args.clips, seed=args.seed, long_games=args.long_games,
        long_duration=args.long_duration, size=args.size, width=args.width, height=args.height,
        native_fps=args.native_fps, workers=args.workers, crf=args.crf, event_rate=args.event_rate,
        event_captions=args.event_captions, strict_event_words=args.strict_event_words,
        log=lambda m: print(m, flush=True))
    c = manifest["counts"]
    print(json.dumps({"out": str(args.out), "train_games": c["train_games"], "eval_games": c["eval_games"],
                      "long_games": c["long_games"], "clips": c["clips"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
