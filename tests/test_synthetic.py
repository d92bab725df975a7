"""The synthetic football-stream generator: real mp4s decoded with decord, the output formats, determinism,
commentary grounding and density, and one-line errors for bad CLI input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data.synth import build_commentary, generate_game, simulate, words_of
from data.synth.render import SIZE_PRESETS, TEAM_RGB, Layout
from data.synthetic import generate_dataset, split_seeds

REPO = Path(__file__).resolve().parents[1]
ARGS = dict(train_games=2, eval_games=1, duration=60.0, clips=3, seed=3, long_games=1, long_duration=40.0)


def _cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "data.synthetic", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A small dataset made through the real CLI (two worker processes)."""
    out = tmp_path_factory.mktemp("synth") / "ds"
    res = _cli("--out", str(out), "--train-games", "2", "--eval-games", "1", "--duration", "60", "--clips", "3",
               "--seed", "3", "--long-games", "1", "--long-duration", "40", "--workers", "2")
    assert res.returncode == 0, res.stderr
    return out


@pytest.fixture(scope="module")
def goal_game(tmp_path_factory):
    """A rendered 90 s game in which both teams score (found by simulating seeds, which is cheap)."""
    for seed in range(100, 300):
        g = simulate(seed, 90.0)
        if g.score[-1].min() >= 1:
            break
    else:  # pragma: no cover
        pytest.fail("no seed with goals for both teams")
    out = tmp_path_factory.mktemp("goal")
    info = generate_game(seed, 90.0, out, "train")
    return out, info


def _read_frames(path: Path, idx: list[int]) -> np.ndarray:
    import decord

    vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
    return vr.get_batch(list(idx)).asnumpy().astype(np.int32)


def _brightest_white_blob(frame: np.ndarray, strip_h: int) -> tuple[float, float]:
    """Centroid (x, y) of the whitest blob: pixels near the maximum of min(R, G, B)."""
    mn = frame.min(axis=2).copy()
    mn[:strip_h] = 0
    y, x = np.unravel_index(int(np.argmax(mn)), mn.shape)
    y0, x0 = max(y - 3, 0), max(x - 3, 0)
    win = mn[y0:y + 4, x0:x + 4]
    ys, xs = np.nonzero(win >= mn[y, x] - 40)
    return float(xs.mean() + x0), float(ys.mean() + y0)


def _load_jsonl_with_seeks(path: Path, seeks: Path) -> list:
    data = path.read_bytes()
    offsets = json.loads(seeks.read_text())
    lines = data.splitlines(keepends=True)
    assert len(offsets) == len(lines)
    rows = []
    for off, line in zip(offsets, lines):
        assert off == 0 or data[off - 1:off] == b"\n", "seek offset is not a line start"
        assert data[off:off + len(line)] == line
        rows.append(json.loads(data[off:data.index(b"\n", off)]))
    return rows


def _check_words(words: list, start: float, end: float) -> None:
    assert words, "no words"
    prev_end = start
    for s, e, w in words:
        assert isinstance(w, str) and w and " " not in w
        assert s == round(s, 2) and e == round(e, 2)
        assert start <= s < e <= end, (s, e, start, end)
        assert s >= prev_end - 1e-9, "words overlap or are unsorted"
        assert 0.2 <= e - s <= 0.7
        prev_end = e


# ----------------------------------------------------------------------------------------------- video vs track
def test_decoded_ball_matches_track(dataset):
    man = json.loads((dataset / "manifest.json").read_text())
    game = man["splits"]["train"]["games"][0]
    track = np.load(dataset / game["track"])
    ev = json.loads((dataset / game["events"]).read_text())
    n = int(track["ball_xy"].shape[0])
    assert n == game["n_frames"] == int(round(60.0 * 24))
    layout = Layout(ev["width"], ev["height"])
    fouls = [(e["t"], e["t"] + 2.1) for e in ev["events"] if e["type"] == "foul"]
    cand = [i for i in range(0, n, 37) if track["ball_visible"][i]
            and not any(a <= i / 24 <= b for a, b in fouls)]
    assert len(cand) >= 20
    frames = _read_frames(dataset / game["video"], cand)
    ball = track["ball_xy"][cand]
    found = np.array([_brightest_white_blob(f, layout.strip_h) for f in frames])
    err = np.hypot(*(found - ball).T)
    assert err.max() <= 3.0, err
    # the check can fail: the ball moves, so the track of other frames does not match
    shifted = np.hypot(*(found - np.roll(ball, 3, axis=0)).T)
    assert (shifted > 3.0).mean() > 0.5
    # players are drawn where the track says: the pixel at each visible player's centre has its team colour
    f0 = frames[5]
    pxy = np.round(track["players_xy"][cand[5]]).astype(int)
    crowd = np.vstack([pxy, np.round(ball[5:6])])
    for p, (x, y) in enumerate(pxy):
        if track["is_keeper"][p] or not (0 <= x < ev["width"] and layout.strip_h <= y < ev["height"]):
            continue
        if (np.hypot(*(crowd - [x, y]).T) < 7).sum() > 1:  # another dot or the ball on top
            continue
        r, g, b = f0[y, x]
        if track["team_ids"][p] == 0:
            assert r > 150 and r > b + 60, (p, f0[y, x])
        else:
            assert b > 150 and b > r + 60, (p, f0[y, x])


def test_track_follows_events(dataset):
    """Ball in the net on goals, at the corner flag on corners, on the touchline for throw-ins, hidden at half-time."""
    for split in ("train", "eval"):
        for name in sorted((dataset / "events" / split).glob("game_*[0-9].json")):
            ev = json.loads(name.read_text())
            track = np.load(name.with_name(name.stem + "_track.npz"))
            lay = Layout(ev["width"], ev["height"])
            fps = ev["fps"]
            bxy = track["ball_xy"]
            for e in ev["events"]:
                i = min(int(round(e["t"] * fps)), len(bxy) - 1)
                x, y = bxy[i]
                if e["type"] == "goal":
                    beyond = x > lay.x1 if e["team"] == "Red" else x < lay.x0
                    assert beyond, e
                elif e["type"] == "corner":
                    assert min(abs(x - lay.x0), abs(x - lay.x1)) < 1.0 and min(abs(y - lay.y0), abs(y - lay.y1)) < 1.0
                elif e["type"] == "throw_in":
                    assert min(abs(y - lay.y0), abs(y - lay.y1)) < 1.0
                elif e["type"] == "half_time":
                    j = int(round((e["t"] + 1.0) * fps))
                    assert not track["ball_visible"][j] and not track["players_visible"][j]
                    assert track["players_visible"][int(round((e["end"] + 0.5) * fps))]


# ----------------------------------------------------------------------------------------------- formats
def test_output_layout_and_formats(dataset):
    man = json.loads((dataset / "manifest.json").read_text())
    assert man["splits"]["train"]["seeds"] == split_seeds(3, "train", 2) == [3000, 3001]
    assert man["splits"]["eval"]["seeds"] == [3500]
    assert man["splits"]["long"]["seeds"] == [3900]
    assert man["resolution"] == {"size": "tiny", "width": 160, "height": 96}
    for split, dur in (("train", 60.0), ("eval", 60.0), ("long", 40.0)):
        rows = _load_jsonl_with_seeks(dataset / f"{split}_with_seeks.jsonl", dataset / f"{split}_seeks.jsonl")
        assert len(rows) == len(man["splits"][split]["seeds"])
        for row, seed in zip(rows, man["splits"][split]["seeds"]):
            user, asst = row
            assert user["role"] == "user" and asst["role"] == "assistant"
            video, text = user["content"]
            assert video["type"] == "video" and video["video"] == f"videos/{split}/game_{seed:06d}.mp4"
            assert (dataset / video["video"]).is_file()
            assert (dataset / f"events/{split}/game_{seed:06d}.json").is_file()
            assert (dataset / f"events/{split}/game_{seed:06d}_track.npz").is_file()
            assert video["video_start"] == 0.0 and video["video_end"] == dur
            assert text == {"type": "text", "text": "", "previous": "", "title": f"Red vs Blue, game {seed}"}
            stream = asst["content"][0]
            assert stream["type"] == "text_stream"
            _check_words(stream["text_stream"], 0.0, dur)

    clips = _load_jsonl_with_seeks(dataset / "clips_with_seeks.jsonl", dataset / "clips_seeks.jsonl")
    assert len(clips) == man["counts"]["clips"] >= 2
    spans: dict[str, list] = {}
    full = {}
    for row in _load_jsonl_with_seeks(dataset / "train_with_seeks.jsonl", dataset / "train_seeks.jsonl"):
        full[row[0]["content"][0]["video"]] = row[1]["content"][0]["text_stream"]
    for user, asst in clips:
        video, text = user["content"]
        assert video["video"].startswith("videos/train/")
        a, b = video["video_start"], video["video_end"]
        assert 16.0 <= b - a <= 64.0
        for a2, b2 in spans.get(video["video"], []):
            assert b <= a2 or b2 <= a, "clips overlap"
        spans.setdefault(video["video"], []).append((a, b))
        words = asst["content"][0]["text_stream"]
        _check_words(words, a, b)
        game_words = full[video["video"]]
        assert words == [w for w in game_words if w[0] >= a and w[1] <= b]
        assert text["previous"] == " ".join(w[2] for w in game_words if w[1] <= a)

    rows = [json.loads(x) for x in (dataset / "eval_inf.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    row = rows[0]
    assert set(row) == {"video", "title", "content", "preasr"} and row["preasr"] == ""
    assert row["video"] == "videos/eval/game_003500.mp4" and (dataset / row["video"]).is_file()
    assert all(len(c) == 3 and c[0] < c[1] and isinstance(c[2], str) for c in row["content"])
    ev = json.loads((dataset / "events/eval/game_003500.json").read_text())
    assert [c[2] for c in row["content"]] == [ln["text"] for ln in ev["lines"]]
    for key in ("seed", "duration", "fps", "width", "height", "events", "lines"):
        assert key in ev
    for e in ev["events"]:
        assert {"t", "end", "type", "team", "score"} <= set(e) and e["t"] <= e["end"] <= ev["duration"]
    for ln in ev["lines"]:
        assert {"start", "end", "text", "event_index"} <= set(ln)
        assert " ".join(w[2] for w in ln["words"]) == ln["text"]


# ----------------------------------------------------------------------------------------------- determinism
def test_same_seed_same_data(dataset, tmp_path):
    again = tmp_path / "again"
    generate_dataset(again, workers=1, **ARGS)
    for rel in ("train_with_seeks.jsonl", "clips_with_seeks.jsonl", "eval_inf.jsonl", "long_with_seeks.jsonl",
                "events/train/game_003000.json", "events/eval/game_003500.json", "manifest.json"):
        a, b = (dataset / rel).read_bytes(), (again / rel).read_bytes()
        if rel == "manifest.json":  # only the worker count differs
            ma, mb = json.loads(a), json.loads(b)
            ma["args"].pop("workers"), mb["args"].pop("workers")
            assert ma == mb
        else:
            assert a == b, rel
    ta, tb = np.load(dataset / "events/train/game_003001_track.npz"), np.load(again / "events/train/game_003001_track.npz")
    assert np.array_equal(ta["ball_xy"], tb["ball_xy"]) and np.array_equal(ta["players_xy"], tb["players_xy"])


def test_different_seeds_differ():
    a, b = simulate(11, 60.0), simulate(12, 60.0)
    assert a.events != b.events
    assert words_of(build_commentary(a)) != words_of(build_commentary(b))
    assert not np.allclose(a.ball, b.ball)
    c = simulate(11, 60.0)
    assert c.events == a.events and np.array_equal(c.players, a.players)
    assert build_commentary(c) == build_commentary(a)


# ----------------------------------------------------------------------------------------------- grounding
def _count_blocks(row: np.ndarray, team: int, half: int) -> int:
    """Runs of the team's colour in one scoreboard row, on that team's half of the strip."""
    r, g, b = row[:, 0], row[:, 1], row[:, 2]
    on = (r > 120) & (r > b + 60) if team == 0 else (b > 120) & (b > r + 60)
    on = on[:half] if team == 0 else on[half:]
    return int(np.sum(on[1:] & ~on[:-1]) + on[0])


def test_goals_are_visible_and_commented_after(goal_game):
    out, info = goal_game
    ev = json.loads((out / info["events"]).read_text())
    lay = Layout(ev["width"], ev["height"])
    goals = [(k, e) for k, e in enumerate(ev["events"]) if e["type"] == "goal"]
    assert goals
    idx, expect = [], []
    for _, e in goals:
        before = [s - (1 if (t == 0) == (e["team"] == "Red") else 0) for t, s in enumerate(e["score"])]
        idx += [int((e["t"] - 0.3) * 24), int((e["t"] + 0.5) * 24)]
        expect += [before, e["score"]]
    frames = _read_frames(out / info["video"], idx)
    row_y = (lay.units_rows[0] + lay.units_rows[1]) // 2
    for f, (r, b) in zip(frames, expect):
        assert _count_blocks(f[row_y], 0, lay.width // 2) == r
        assert _count_blocks(f[row_y], 1, lay.width // 2) == b
    # the penalty box the goal went into glows in the scorer's colour right after the goal
    cy = (lay.height + lay.strip_h) // 2
    for f, (_, e) in zip(frames[1::2], goals):
        team = 0 if e["team"] == "Red" else 1
        xs = slice(int(lay.x1) - 18, int(lay.x1) - 2) if team == 0 else slice(int(lay.x0) + 3, int(lay.x0) + 19)
        box = np.median(f[cy - 12:cy + 12, xs].reshape(-1, 3), axis=0)
        other = np.median(f[cy - 12:cy + 12, (slice(int(lay.x0) + 3, int(lay.x0) + 19) if team == 0
                                               else slice(int(lay.x1) - 18, int(lay.x1) - 2))].reshape(-1, 3), axis=0)
        if team == 0:
            assert box[0] > other[0] + 60 and box[0] > box[1], (box, other)
        else:
            assert box[2] > other[2] + 60 and box[2] > box[1], (box, other)
    # every event line starts at/after its event; each goal has a line that names the scorer and the score
    events = ev["events"]
    for ln in ev["lines"]:
        if ln["kind"] != "filler":
            assert ln["start"] >= events[ln["event_index"]]["t"], ln
    for k, e in goals:
        said = [ln for ln in ev["lines"] if ln["event_index"] == k and ln["kind"] == "event"]
        assert len(said) == 1
        ln = said[0]
        assert e["t"] <= ln["start"] <= e["t"] + 3.0
        assert e["team"] in ln["text"] or "level" in ln["text"]


def test_fouls_and_half_time_are_visible(goal_game):
    out, info = goal_game
    ev = json.loads((out / info["events"]).read_text())
    lay = Layout(ev["width"], ev["height"])
    fouls = [e for e in ev["events"] if e["type"] == "foul"]
    ht = [e for e in ev["events"] if e["type"] == "half_time"]
    assert len(ht) == 1
    idx = [int((ht[0]["t"] + 2) * 24), int((ht[0]["t"] - 3) * 24)]
    for e in fouls:
        idx += [int((e["t"] + 1.0) * 24), int((e["t"] + 3.0) * 24)]
    frames = _read_frames(out / info["video"], idx)
    pitch = slice(lay.strip_h + 3, lay.height - 3)
    assert frames[0][pitch].mean() < 0.5 * frames[1][pitch].mean()  # darkened break
    yellow = lambda f: ((f[..., 0] > 180) & (f[..., 1] > 160) & (f[..., 2] < 110))[pitch].sum()  # noqa: E731
    for k in range(len(fouls)):
        assert yellow(frames[2 + 2 * k]) >= 6  # square shown for 2 s ...
        assert yellow(frames[3 + 2 * k]) < 3  # ... then gone


def test_commentary_density_and_silences():
    good = total = 0
    for seed in range(4):
        g = simulate(seed, 180.0)
        lines = build_commentary(g)
        words = words_of(lines)
        _check_words(words, 0.0, 180.0)
        durs = np.array([e - s for s, e, _ in words])
        assert 0.28 <= durs.mean() <= 0.45
        ends = np.array([w[1] for w in words])
        for s in range(0, 180 - 24 + 1, 12):
            n = int(((ends > s) & (ends <= s + 24)).sum())
            good += n >= 48
            total += 1
        # silent whole seconds during play (quiet spells), and the quiet spells really are silent
        spoken = np.zeros(180, dtype=bool)
        for s, e, _ in words:
            spoken[int(s):int(np.ceil(e))] = True
        assert (~spoken).sum() >= 5
        assert g.silences
        for a, b in g.silences:
            assert not any(s < b and a < e for s, e, _ in words)
        # commentary in play ~2-3 words per second
        assert 1.8 <= len(words) / 180.0 <= 3.2
    assert good / total >= 0.75, (good, total)


def test_memory_lines_count_earlier_events():
    """'that's the third corner for Red' is only said after exactly three Red corners, and so on."""
    import re

    from data.synth.commentary import count_word, ordinal_word

    num = {ordinal_word(n): n for n in range(1, 200)} | {count_word(n): n for n in range(1, 200)}
    patterns = [
        (r"(\S+) corner for (Red|Blue)", "corner", 1, 2), (r"another corner for (Red|Blue), their (\S+)", "corner", 2, 1),
        (r"(\S+) foul by (Red|Blue)", "foul", 1, 2), (r"another foul by (Red|Blue), their (\S+)", "foul", 2, 1),
        (r"(Red|Blue)'s (\S+) of the afternoon", "goal", 2, 1), (r"that's (Red|Blue)'s (\S+) goal", "goal", 2, 1),
        (r"(Red|Blue) have had (\S+) corners", "corner", 2, 1), (r"(\S+) shots for (Red|Blue) so far", "shot", 1, 2),
        (r"the (Red|Blue) keeper has made (\S+) saves", "save", 2, 1),
        (r"(\S+) save from the (Red|Blue) keeper", "save", 1, 2),
    ]
    checked = 0
    for seed in range(12):
        g = simulate(seed, 180.0)
        for ln in build_commentary(g):
            for pat, kind, gi_n, gi_team in patterns:
                for m in re.finditer(pat, ln["text"]):
                    if m.group(gi_n) not in num:
                        continue
                    n, team = num[m.group(gi_n)], m.group(gi_team)
                    seen = [e for e in g.events if e["type"] == kind and e["team"] == team and e["t"] <= ln["start"]]
                    assert len(seen) == n, (ln["text"], len(seen))
                    checked += 1
    assert checked >= 10, checked


def test_event_rate_captions_and_event_words_only_at_events():
    """--event-rate: more goals/saves/corners a minute; --event-captions: a band in the event's colours for
    CAPTION_S s after each; --strict-event-words: the words that name these events occur only at them (grounding
    precision 1)."""
    from data.synth.game import CAPTION_S
    from data.synth.render import CAPTION_FRACTION, KEEPER_RGB, Renderer
    from streaming_vlm.eval.grounding import event_scores

    types = ("goal", "save", "corner")
    counts = {r: sum(e["type"] in types for seed in range(4) for e in simulate(seed, 180.0, 24.0, r).events)
              for r in (1.0, 5.0)}
    assert counts[5.0] >= 1.4 * counts[1.0], counts
    with pytest.raises(ValueError):
        simulate(0, 60.0, 24.0, 0.0)

    lay = Layout(160, 96)
    checked = 0
    for seed in range(3):
        g = simulate(seed, 180.0, 24.0, 5.0)
        lines = build_commentary(g, strict_event_words=True)
        s = event_scores([{"start": ln["start"], "end": ln["end"], "text": ln["text"]} for ln in lines], g.events,
                         tol=3.0, types=types)
        assert s["events"] >= 8 and s["recalled"] == s["events"] and s["grounded"] == s["mentions"], s
        on, off = Renderer(lay, captions=True), Renderer(lay)
        bp, pp = lay.to_px(g.ball), lay.to_px(g.players)
        band = slice(lay.height - int(round(CAPTION_FRACTION * lay.height)) + 1, lay.height)
        for e in g.events:
            if e["type"] not in ("goal", "save") or any(0 < o["t"] - e["t"] < CAPTION_S + 0.3 for o in g.events
                                                        if o["type"] in types):
                continue
            team = 0 if e["team"] == "Red" else 1
            colour = (TEAM_RGB if e["type"] == "goal" else KEEPER_RGB)[team]
            i = g.frame_at(e["t"] + 1.0)
            shown = np.median(on.frame(g, i, bp, pp)[band].reshape(-1, 3), axis=0)
            plain = np.median(off.frame(g, i, bp, pp)[band].reshape(-1, 3), axis=0)
            later = np.median(on.frame(g, g.frame_at(e["t"] + CAPTION_S + 0.2), bp, pp)[band].reshape(-1, 3), axis=0)
            assert np.abs(shown - colour).max() <= 2, (e, shown)
            assert np.abs(plain - colour).max() > 60 and np.abs(later - colour).max() > 60, (e, plain, later)
            checked += 1
    assert checked >= 5, checked


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args", [
    ["--duration", "-5"],
    ["--duration", "0"],
    ["--size", "huge"],
    ["--seed", "-1"],
    ["--seed", "abc"],
    ["--width", "161", "--height", "96"],
    ["--unwritable"],
])
def test_bad_input_is_one_line(args, tmp_path, capfd):
    """The CLI's main in this process (the same module as a process: test_bad_inputs.py)."""
    from in_process import run_module  # tests/in_process.py

    out = tmp_path / "out"
    if args == ["--unwritable"]:
        blocker = tmp_path / "file"
        blocker.write_text("x")
        out, args = blocker / "out", []
    capfd.readouterr()
    code = run_module(["-m", "data.synthetic", "--out", str(out), "--train-games", "1", "--eval-games", "0", "--clips",
                       "0", *args])
    err = capfd.readouterr().err
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("error:")


def test_size_presets_and_python_api(tmp_path):
    assert SIZE_PRESETS["tiny"] == (160, 96) and SIZE_PRESETS["small"] == (320, 192)
    info = generate_game(42, 12.0, tmp_path, "eval", size="small", native_fps=10)
    import decord

    vr = decord.VideoReader(info["video_path"])
    assert len(vr) == 120 and abs(vr.get_avg_fps() - 10) < 1e-6
    assert vr[0].shape == (192, 320, 3)
    assert Path(info["events_path"]).is_file() and Path(info["track_path"]).is_file()
    _check_words(info["words"], 0.0, 12.0)
