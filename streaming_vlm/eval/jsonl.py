"""Reading and writing the JSON-lines files the evaluation uses.

Two reading modes, because the files play different roles:

- `read_rows_strict`: reference rows and verdict files are ground truth; one bad line is an error naming the line.
- `read_rows_lenient`: prediction files come from other systems; bad lines are skipped and their line numbers
  returned, so the caller can report how many were dropped (see `predictions.py`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from streaming_vlm.errors import UserError
from streaming_vlm.output_files import atomic_writer, check_output


def _open_text(path: str | os.PathLike, what: str):
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} file not found: {path}")
    if not path.is_file():
        raise UserError(f"{what} path is not a file: {path}")
    try:
        return path.open("r", encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot read {what} file {path}: {err.strerror}") from None


def read_rows_strict(path: str | os.PathLike, what: str) -> list[dict[str, Any]]:
    """Every non-blank line must be a JSON object. A `.json` file may instead hold one JSON list of objects."""
    with _open_text(path, what) as f:
        text = f.read()
    if str(path).endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{what} file {path} is not valid JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise UserError(f"{what} file {path} must hold a JSON list of objects")
        return data
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{what} file {path}, line {number}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{what} file {path}, line {number}: expected a JSON object")
        rows.append(row)
    if not rows:
        raise UserError(f"{what} file {path} holds no rows")
    return rows


def read_rows_lenient(path: str | os.PathLike, what: str) -> tuple[list[tuple[int, Any]], list[int]]:
    """Return ([(line_number, parsed_value)], [line numbers that were not JSON]). Blank lines are ignored."""
    with _open_text(path, what) as f:
        parsed, bad = [], []
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                parsed.append((number, json.loads(line)))
            except json.JSONDecodeError:
                bad.append(number)
    return parsed, bad


def write_rows(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> None:
    """Write all rows, replacing the file only once everything is written (no half files after a crash)."""
    check_output(path)
    with atomic_writer(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
