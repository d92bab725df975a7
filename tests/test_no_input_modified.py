"""No entry point modifies or deletes a file it was only given to read, and no failed run replaces an existing
output.

Every input (a video, a checkpoint folder, reference and prediction files, a user's folder) is hashed before and
after good and bad runs of the inference CLI, the eval CLI (generate, judge, report), the LiveSports converter and
the checkpoint factory; outputs that existed before a failed run are compared byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.fixture_video import write_video


def _hashes(paths) -> dict[str, str]:
    out = {}
    for root in paths:
        root = Path(root)
        for f in sorted([root] if root.is_file() else root.rglob("*")):
            if f.is_file():
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def _main(fn, argv) -> int:
    try:
        code = fn([str(a) for a in argv])
    except SystemExit as exit_:
        return exit_.code
    return code or 0


@pytest.fixture
def world(tmp_path, tiny_ckpt):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, ckpt)
    video = write_video(tmp_path / "game.mp4", seconds=2, fps=8, width=64, height=64)
    content = [[t, t + 1, "the keeper claims the cross and the crowd roars"] for t in range(2)]
    reference = tmp_path / "ref.jsonl"
    reference.write_text(json.dumps({"video": "game.mp4", "title": "t", "content": content, "preasr": ""}) + "\n")
    predictions = tmp_path / "pred.jsonl"
    predictions.write_text("".join(json.dumps({"video": "game.mp4", "start": t, "end": t + 1, "text": "a cross"})
                                   + "\n" for t in range(2)))
    user = tmp_path / "my_model"
    user.mkdir()
    (user / "NOTES.txt").write_text("mine")
    inputs = [ckpt, video, reference, predictions, user]
    return {"d": tmp_path, "ckpt": ckpt, "video": video, "reference": reference, "predictions": predictions,
            "user": user, "inputs": inputs, "before": _hashes(inputs)}


def test_no_entry_point_changes_its_inputs_good_or_bad_runs(world, capsys):
    from data.livesports import main as livesports_main
    from streaming_vlm.eval.cli import main as eval_main
    from streaming_vlm.inference.inference import main as infer_main
    from streaming_vlm.model.tiny import main as tiny_main

    w, d = world, world["d"]
    infer = ["--model_path", w["ckpt"], "--video_path", w["video"], "--max_new_tokens", "2", "--device", "cpu",
             "--no_progress"]
    # good runs
    assert _main(infer_main, infer + ["--output_path", d / "out.vtt", "--emit_json", d / "out.jsonl"]) == 0
    assert _main(eval_main, ["generate", "--reference", w["reference"], "--video-root", d, "--model_path", w["ckpt"],
                             "--out", d / "gen.jsonl", "--set", "max_new_tokens=2", "--set", "end=1"]) == 0
    assert [json.loads(ln)["end"] for ln in (d / "gen.jsonl").read_text().splitlines()] == [1.0]  # end=30 honoured
    assert _main(eval_main, ["judge", "--predictions", w["predictions"], "--baseline", d / "gen.jsonl",
                             "--reference", w["reference"], "--out", d / "verdicts.jsonl", "--judge", "offline",
                             "--segment-seconds", "1", "--min-words", "1", "--report", d / "report.json"]) == 0
    assert _main(eval_main, ["report", d / "verdicts.jsonl", "--json", d / "report2.json"]) == 0
    # bad runs: an output that is an input, or a file inside an input folder
    bad = [
        (infer_main, infer + ["--output_path", w["video"]]),
        (infer_main, infer + ["--output_path", d / "o.vtt", "--emit_json", w["ckpt"] / "config.json"]),
        (eval_main, ["generate", "--reference", w["reference"], "--model_path", w["ckpt"], "--out", w["reference"]]),
        (eval_main, ["judge", "--predictions", w["predictions"], "--baseline", w["predictions"], "--reference",
                     w["reference"], "--out", w["predictions"]]),
        (eval_main, ["report", d / "verdicts.jsonl", "--json", d / "verdicts.jsonl"]),
        (livesports_main, ["--source", w["reference"], "--out", w["reference"]]),
        (tiny_main, ["--out", w["user"]]),
        (tiny_main, ["--out", w["ckpt"] / "config.json"]),
    ]
    for fn, argv in bad:
        assert _main(fn, argv) == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert _hashes(w["inputs"]) == w["before"]


def test_a_failed_eval_run_never_replaces_an_existing_output(world, capsys):
    from streaming_vlm.eval.cli import main as eval_main

    w, d = world, world["d"]
    reference = d / "two.jsonl"  # the second game's video is missing: the run fails after the first
    rows = [json.loads(w["reference"].read_text()), {"video": "gone.mp4", "title": "x", "content": [[0, 1, "hi"]]}]
    reference.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = d / "gen.jsonl"
    out.write_text('{"video": "game.mp4", "start": 0, "end": 1, "text": "an older, complete run"}\n')
    before = out.read_bytes()
    code = _main(eval_main, ["generate", "--reference", reference, "--video-root", d, "--model_path", w["ckpt"],
                             "--out", out, "--set", "max_new_tokens=2", "--set", "end=1"])
    err = capsys.readouterr().err
    assert code == 2 and "video not found" in err and "Traceback" not in err
    assert out.read_bytes() == before
    assert not [p for p in d.iterdir() if p.name.startswith(".gen.jsonl.tmp")]  # no temp file left behind
    assert _hashes(w["inputs"]) == w["before"]
