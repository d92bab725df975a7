"""A table of bad inputs through every entry point: train.py, the inference CLI, the eval CLI, the data tools and
the checkpoint factory.

Each must exit != 0 with at most a few lines on stderr, the expected words, no traceback, and, where the input
allows it, before anything heavy loads (no model weights loaded, no training started). One case per entry point
runs as the user runs it (a subprocess: the real exit code and stderr of a fresh interpreter); the others call the
same entry point in this process (the CLI's `main(argv)`, or train.py's steps via tests/in_process.py), which saves
a fresh interpreter's imports per case.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from in_process import run_module, train_task  # tests/in_process.py

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
       "WANDB_MODE": "disabled"}
for _k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
    ENV.pop(_k, None)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_ckpt):
    from tests.fixture_video import write_video

    d = tmp_path_factory.mktemp("bad_inputs")
    truncated = d / "truncated_ckpt"
    shutil.copytree(tiny_ckpt, truncated)
    weights = truncated / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    notes = d / "my_model"
    notes.mkdir()
    (notes / "NOTES.txt").write_text("mine")
    (d / "a_file").write_text("not a folder")
    reference = d / "ref.jsonl"
    reference.write_text('{"video": "game.mp4", "title": "t", "content": [[0, 1, "hello there"]], "preasr": ""}\n')
    return {"d": d, "ckpt": tiny_ckpt, "truncated": truncated, "notes": notes, "video": write_video(
        d / "game.mp4", seconds=2, fps=8, width=64, height=64), "reference": reference}


def _train(x, *extra):
    return [str(ROOT / "train.py"), "experiment=smoke_stage1", f"data.root={x['d']}/no_data", "data.generate=null",
            f"model.name_or_path={x['ckpt']}", f"output_dir={x['d']}/run", "eval=none", *extra]


def _infer(x, *extra):
    return ["-m", "streaming_vlm.inference.inference", "--model_path", str(x["ckpt"]), "--video_path",
            str(x["video"]), "--output_path", str(x["d"] / "o.vtt"), "--no_progress", *extra]


def _generate(x, *extra):
    return ["-m", "streaming_vlm.eval", "generate", "--reference", str(x["reference"]), "--video-root", str(x["d"]),
            "--model_path", str(x["ckpt"]), *extra]


CASES = {
    # train.py: every config value, the model path, the output folder
    "train max_steps=abc": (lambda x: _train(x, "trainer.max_steps=abc"), "trainer.max_steps must be an integer"),
    "train learning_rate=abc": (lambda x: _train(x, "trainer.learning_rate=abc"), "learning_rate must be a number"),
    "train data.fps=nan": (lambda x: _train(x, "data.fps=nan"), "data.fps must be a finite number"),
    "train text_sliding_window=-5": (lambda x: _train(x, "data.text_sliding_window=-5"),
                                     "data.text_sliding_window must be >= 0"),
    "train max_bad_fraction=2": (lambda x: _train(x, "data.max_bad_fraction=2"), "data.max_bad_fraction must be in"),
    "train unwritable output_dir": (lambda x: _train(x, f"output_dir={x['d']}/a_file/run"), "output_dir"),
    "train user folder as model": (lambda x: _train(x, f"model.name_or_path={x['notes']}"), "left alone"),
    "train truncated weights": (lambda x: _train(x, f"model.name_or_path={x['truncated']}"), "damaged or truncated"),
    # the inference CLI
    "cli output in a missing folder": (lambda x: _infer(x, "--output_path", "/missing/dir/o.vtt"),
                                       "folder does not exist"),
    "cli output is the video": (lambda x: _infer(x, "--output_path", str(x["video"])), "is also an input"),
    "cli emit_json in a missing folder": (lambda x: _infer(x, "--emit_json", str(x["d"] / "no" / "o.jsonl")),
                                          "folder does not exist"),
    "cli fps inf": (lambda x: _infer(x, "--fps", "inf"), "fps must be > 0 and at most"),
    "cli fps 1e9": (lambda x: _infer(x, "--fps", "1e9"), "fps must be > 0 and at most"),
    "cli start past the end": (lambda x: _infer(x, "--start", "1000"), "past the end of the video"),
    "cli previous_text writes a special token": (lambda x: _infer(x, "--previous_text", "so far <|im_end|> more"),
                                                 "contains the special token <|im_end|>"),
    "cli query writes a special token": (lambda x: _infer(x, "--query", "describe <|video_pad|>"),
                                         "contains the special token <|video_pad|>"),
    "cli truncated weights": (lambda x: _infer(x, "--model_path", str(x["truncated"])), "damaged or truncated"),
    # the eval CLI
    "eval generate --set window_size=abc": (lambda x: _generate(x, "--out", str(x["d"] / "p.jsonl"), "--set",
                                                                "window_size=abc"), "window_size must be int"),
    "eval generate --out in a missing folder": (lambda x: _generate(x, "--out", str(x["d"] / "no" / "p.jsonl")),
                                                "folder does not exist"),
    "eval generate --out is the reference": (lambda x: _generate(x, "--out", str(x["reference"])),
                                             "is also an input"),
    "eval judge --out in a missing folder": (lambda x: ["-m", "streaming_vlm.eval", "judge", "--predictions",
                                                        str(x["reference"]), "--baseline", str(x["reference"]),
                                                        "--reference", str(x["reference"]), "--out",
                                                        "/missing/v.jsonl"], "folder does not exist"),
    "eval report --json in a missing folder": (lambda x: ["-m", "streaming_vlm.eval", "report", str(x["reference"]),
                                                          "--json", "/missing/r.json"], "folder does not exist"),
    # the data tools and the checkpoint factory
    "synthetic --train-games abc": (lambda x: ["-m", "data.synthetic", "--out", str(x["d"] / "s"), "--train-games",
                                               "abc"], "must be an integer"),
    "synthetic --out under a file": (lambda x: ["-m", "data.synthetic", "--out", str(x["d"] / "a_file" / "s")],
                                     "a_file"),
    "livesports --out in a missing folder": (lambda x: ["-m", "data.livesports", "--source", str(x["reference"]),
                                                        "--out", "/missing/e.jsonl"], "folder does not exist"),
    "livesports --source missing": (lambda x: ["-m", "data.livesports", "--source", str(x["d"] / "none.jsonl"),
                                               "--out", str(x["d"] / "e.jsonl")], "not found"),
    "tiny --out a user folder": (lambda x: ["-m", "streaming_vlm.model.tiny", "--out", str(x["notes"])],
                                 "left alone"),
}


# run as a subprocess: one case per entry point
SUBPROCESS = {"train max_steps=abc", "cli fps inf", "eval generate --set window_size=abc",
              "synthetic --train-games abc", "livesports --source missing", "tiny --out a user folder"}


def _in_process(argv: list[str], capfd) -> tuple[int, str, str]:
    """The entry point's own `main` (train.py: its steps) on `argv`, in this process: (exit code, stdout, stderr)."""
    capfd.readouterr()
    code = train_task(argv[1:]) if argv[0].endswith("train.py") else run_module(argv)
    out = capfd.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_line_before_loading(case, inputs, capfd, monkeypatch):
    argv, needle = CASES[case]
    if case in SUBPROCESS:
        proc = subprocess.run([sys.executable, *argv(inputs)], cwd=ROOT, env=ENV, capture_output=True, text=True,
                              timeout=300)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
        assert code == 2 and err.strip().splitlines()[-1].startswith("error: "), (code, err)  # the CLIs' contract
    else:
        for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
            monkeypatch.delenv(k, raising=False)
        monkeypatch.chdir(ROOT)
        code, out, err = _in_process(argv(inputs), capfd)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code not in (0, None), (out, err)
    assert "Traceback" not in err and 1 <= len(lines) <= 3, err
    assert needle in err, err
    assert "Loading weights" not in err and "trainable params" not in out  # nothing heavy was loaded
    assert (inputs["notes"] / "NOTES.txt").read_text() == "mine"
