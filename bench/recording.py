"""Appending a benchmark's table to BENCHMARKS.md, headed by the script, the device and the date."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys


def cpu_device() -> str:
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def append_section(path: str, script: str, device: str, detail: str, table: str) -> None:
    """`## <script> — <device> — <date>`, the command line as run, `detail` in parentheses, then the table."""
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"\n## {script} — {device} — {stamp}\n\n`python bench/{script}.py {' '.join(sys.argv[1:])}` "
                 f"({detail})\n\n{table}\n")
