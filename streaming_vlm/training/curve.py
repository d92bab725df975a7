"""The loss curve of a run: `train_losses.jsonl` (one exact record per optimizer step, appended as training goes,
tagged with the attempt that wrote it) -> `loss_curve.json` and a printed table.

After a resume the steps redone by the new attempt overwrite the killed attempt's records of the same steps (the
later line wins), so the curve is the one the finished model actually followed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from streaming_vlm.training.checkpoints import write_json_atomic
from streaming_vlm.training.trainer import LOSS_LOG

CURVE_FILE = "loss_curve.json"


def read_records(output_dir: str | Path) -> list[dict]:
    path = Path(output_dir) / LOSS_LOG
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line cut by a kill
            continue
    return out


def curve_from_records(records: list[dict]) -> list[dict]:
    by_step: dict[int, dict] = {}
    for r in records:
        by_step[int(r["step"])] = r
    return [by_step[s] for s in sorted(by_step)]


def format_table(curve: list[dict], heldout: dict | None = None, max_rows: int = 32) -> str:
    if not curve:
        return "(no steps recorded)"
    rows = curve
    if len(curve) > max_rows:
        stride = math.ceil(len(curve) / max_rows)
        rows = curve[::stride] + ([curve[-1]] if (len(curve) - 1) % stride else [])
    lo = min(r["loss"] for r in curve)
    hi = max(r["loss"] for r in curve)
    width = 40
    lines = [f"{'step':>6}  {'loss':>9}  {'lr':>9}  curve"]
    for r in rows:
        frac = 0.0 if hi == lo else (r["loss"] - lo) / (hi - lo)
        bar = "#" * max(1, round(frac * width))
        lr = f"{r['lr']:.2e}" if r.get("lr") is not None else "-"
        lines.append(f"{r['step']:>6}  {r['loss']:>9.4f}  {lr:>9}  {bar}")
    if heldout:
        items = sorted(heldout.items(), key=lambda kv: int(kv[0]))
        lines.append("held-out loss: " + ", ".join(f"step {k}: {v['loss']:.4f}" for k, v in items))
    return "\n".join(lines)


def write_curve(output_dir: str | Path) -> tuple[list[dict], str]:
    """Write loss_curve.json; returns (curve, printable table)."""
    output_dir = Path(output_dir)
    curve = curve_from_records(read_records(output_dir))
    heldout = None
    hpath = output_dir / "heldout_loss.json"
    if hpath.exists():
        try:
            heldout = json.loads(hpath.read_text())
        except ValueError:
            heldout = None
    doc = {"steps": [r["step"] for r in curve], "loss": [r["loss"] for r in curve],
           "lr": [r.get("lr") for r in curve], "heldout": heldout or {}}
    write_json_atomic(output_dir / CURVE_FILE, doc)
    return curve, format_table(curve, heldout)
