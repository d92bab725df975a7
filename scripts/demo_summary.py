"""Demo step: the last lines of `make demo`: what ran, a few cues of the VTT, the quality figures, the win rate
and where the files are. Reads what the earlier steps wrote (quality_*.json, report.json, the VTT)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from streaming_vlm.errors import UserError, cli_entry


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {path}: {err}") from None


def vtt_cues(path: Path, n: int) -> list[str]:
    """The first `n` cues of a WebVTT file that say something, as 'start --> end  text'."""
    try:
        blocks = path.read_text().split("\n\n")
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from None
    cues = []
    for block in blocks:
        lines = [ln for ln in block.strip().splitlines() if ln.strip()]
        timing = next((i for i, ln in enumerate(lines) if "-->" in ln), None)
        text = " ".join(lines[timing + 1:]).strip() if timing is not None else ""
        if not text or text == "...":  # a silent second
            continue
        cues.append(f"{lines[timing]}  {text}")
        if len(cues) == n:
            break
    return cues


def figures(q: dict) -> str:
    v, g, s = q["vocabulary"], q["grounding"], q["similarity"]
    return (f"{100 * v['fraction']:.1f}% commentary words ({v['words']} words), "
            f"{g['recalled']}/{g['events']} goals/corners/saves named within ±{g['tolerance_s']:g} s "
            f"({100 * g['recall']:.0f}%, precision {100 * g['precision']:.0f}%, chance {100 * g['precision_control']:.0f}%), "
            f"ROUGE-L {s['mean']:.3f} per {s['segments']} segments")


def _steps(run: Path) -> str:
    """Optimizer steps of a finished training run (its train_summary.json), or '?'."""
    try:
        return str(int(json.loads((run / "train_summary.json").read_text())["global_step"]))
    except (OSError, ValueError, KeyError, TypeError):
        return "?"


@cli_entry
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="the demo's output folder")
    ap.add_argument("--vtt", required=True)
    ap.add_argument("--seconds", type=int, required=True, help="wall time of the demo so far")
    ap.add_argument("--cues", type=int, default=5)
    ap.add_argument("--path", action="append", default=[], metavar="LABEL=PATH", help="one more file to list")
    args = ap.parse_args(argv)
    out = Path(args.out)
    trained, chunk = _load(out / "eval" / "quality_stage2.json"), _load(out / "eval" / "quality_chunk.json")
    o = _load(out / "eval" / "report.json")["overall"]
    steps = {arm: _steps(out / arm) for arm in ("stage1", "stage2", "chunk")}
    lines = ["", f"==> Summary: demo finished in {args.seconds} s",
             f"ran: tiny Qwen3-VL (vision tower pretrained on the training games), stage 1 streaming SFT "
             f"({steps['stage1']} steps) + stage 2 anneal ({steps['stage2']} steps), a chunk-only baseline "
             f"({steps['chunk']} steps: the smaller arm), both over the held-out games in infinite mode",
             f"first cues of {args.vtt}:"]
    lines += [f"  {c}" for c in vtt_cues(Path(args.vtt), args.cues)] or ["  (no cue with words)"]
    lines += [f"trained (stage 2):    {figures(trained)}",
              f"chunk-only baseline:  {figures(chunk)}",
              f"win rate vs the chunk-only baseline (offline judge, 30 s segments): {o['win_rate_pct']:.1f}% "
              f"({o['model_votes']} of {o['votes']} votes; baseline {o['baseline_votes']}, ties {o['ties']})",
              "files:",
              f"  commentary     {args.vtt}",
              f"  predictions    {out / 'eval'}/stage2.jsonl, chunk.jsonl (per second, held-out games)",
              f"  figures        {out / 'eval'}/quality_stage2.json, quality_chunk.json, report.json",
              f"  models         {out}/stage2, {out}/chunk"]
    for item in args.path:
        label, sep, path = item.partition("=")
        if not sep:
            raise UserError(f"--path expects LABEL=PATH, got {item!r}")
        lines.append(f"  {label:<14} {path}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
