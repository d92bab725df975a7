"""The paper-table report as markdown: the overall win rate with its bootstrap interval, the votes, one row per
video, and how the numbers were made (judge, segments, the two prediction files and the baseline's header)."""

from __future__ import annotations

from typing import Any


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def report_markdown(report: dict[str, Any], title: str = "Win rate vs baseline") -> str:
    overall, ci = report["overall"], report.get("ci95") or {}
    lines = [f"# {title}", ""]
    lines.append(
        f"**Win rate {_pct(overall['win_rate_pct'])}%** "
        f"(bootstrap {int(100 * ci.get('level', 0.95))}% CI over segments: "
        f"{_pct(ci.get('low_pct'))}-{_pct(ci.get('high_pct'))}%), "
        f"{overall['model_votes']} of {overall['votes']} votes on {overall['segments']} segments."
    )
    lines += ["", "| video | segments | votes | model | baseline | ties | invalid | missing | win % |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, t in list(report["per_video"].items()) + [("**overall**", overall)]:
        lines.append(f"| {name} | {t['segments']} | {t['votes']} | {t['model_votes']} | {t['baseline_votes']} | "
                     f"{t['ties']} | {t['invalid']} | {t['missing_votes']} | {_pct(t['win_rate_pct'])} |")
    run = report.get("run") or {}
    lines += ["", f"- judge: `{run.get('judge', '?')}`, protocol {run.get('protocol', '?')}"
              + (f", {run['segment_seconds']:g} s segments with >= {run['min_words']} reference words"
                 if "segment_seconds" in run else "")]
    lines.append(f"- missing segments count as {'model losses' if report['missing_policy'] == 'loss' else 'excluded'}"
                 f": {report['missing']['segments']} (no model output {len(report['missing']['model'])}, "
                 f"no baseline output {len(report['missing']['baseline'])})")
    for side, info in (run.get("predictions") or {}).items():
        lines.append(f"- {side}: `{info.get('source', '')}` ({info.get('rows', 0)} rows, "
                     f"{info.get('skipped_lines', 0)} skipped)")
    header = report.get("baseline_header")
    if header:
        endpoint, protocol = header.get("endpoint", {}), header.get("protocol", {})
        lines.append(f"- baseline made by `{endpoint.get('model', '?')}` at {endpoint.get('base_url', '?')}: "
                     + ", ".join(f"{k}={v}" for k, v in protocol.items() if k not in ("query", "system_prompt")))
    return "\n".join(lines) + "\n"
