"""Data sources -> `StreamRecord`s, with random access, and bad rows reported as `BadSample(reason)`.

Row forms understood (by every source; a JSONL file may even mix them):

1. LiveCC / StreamingVLM conversation (a JSON list, or a dict holding it under `messages`/`conversation(s)`)::

       [{"role": "user", "content": [{"type": "video", "video": "rel.mp4", "video_start": 16.8, "video_end": 158.8},
                                     {"type": "text", "text": "", "previous": "...", "title": "..."}]},
        {"role": "assistant", "content": [{"type": "text_stream", "text_stream": [[16.8, 16.9, "all"], ...]}]}]

   Missing `video_start`/`video_end` default to 0 and the last word's end.
2. Inf-Stream-Eval / LiveSports-style rows ``{"video", "content": [[s, e, "a line of text"], ...], "preasr",
   "title"}``: each line's text is split on whitespace into words whose times are interpolated evenly over
   [s, e]; `preasr` becomes the record's `previous`. The span is `video_start`/`video_end` when given, else from
   floor(first line start) to ceil(last line end).
3. Flat rows ``{"video", "video_start", "video_end", "text_stream": [[s, e, w], ...], "previous", "title"}``.

In Arrow-backed datasets (which cannot store mixed [s, e, text] lists) `content`/`text_stream` may be JSON strings
or lists of ``{"start", "end", "text"|"word"}`` dicts, and a conversation column may be a JSON string.

Sources:

- `JsonlSource(path, root)`: random access by byte offsets, taken from a seeks sidecar (`X_seeks.jsonl` next to
  `X_with_seeks.jsonl`: one JSON list of offsets, or one offset per line), else from the file's last line when it is
  a JSON list of integers (LiveCC style), else by scanning the file once for line starts. A sidecar is checked
  against the file (its last offset must start the file's last line): a stale one (rows appended or removed since)
  is reported and the file rescanned, and the rows found are checked and counted like any others.
- `HFSource(dataset, root)`: any indexable of dict rows (a Hugging Face `datasets.Dataset`, a list); conversation
  columns may hold JSON strings.
- `open_source(spec, root=None, split="train")`: `*.jsonl` -> JsonlSource; a `datasets.save_to_disk` directory,
  `*.parquet`, or `hf:name[:config]` -> HFSource.

Video paths resolve against `root` (default: the JSONL file's directory); absolute paths are kept.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from streaming_vlm.data.bad_samples import (MALFORMED_JSON, MALFORMED_RECORD, NON_UTF8, BadSample)
from streaming_vlm.data.records import StreamRecord, Word
from streaming_vlm.errors import UserError

log = logging.getLogger(__name__)

CONVERSATION_KEYS = ("messages", "conversation", "conversations")


# ---- row parsing ------------------------------------------------------------------------------------------------
def resolve_video(path: str, root: str | os.PathLike | None) -> str:
    if not isinstance(path, str) or not path:
        raise BadSample(MALFORMED_RECORD, "no video path")
    if os.path.isabs(path) or root is None:
        return path
    return os.path.join(str(root), path)


def record_from_row(row: Any, root: str | os.PathLike | None = None, where: str = "") -> StreamRecord:
    """Any supported row form -> StreamRecord; raises BadSample(malformed_record | non_utf8 | malformed_json)."""
    try:
        if isinstance(row, dict):
            for key in CONVERSATION_KEYS:
                if key in row and row[key] is not None:
                    conv = row[key]
                    if isinstance(conv, str):
                        conv = _loads_text(conv)
                    rec = _from_conversation(conv, root)
                    break
            else:
                if row.get("content") is not None:
                    rec = _from_eval_row(row, root)
                elif row.get("text_stream") is not None:
                    rec = _from_flat_row(row, root)
                else:
                    raise BadSample(MALFORMED_RECORD, f"unknown row form with keys {sorted(row)[:8]}")
        elif isinstance(row, list):
            rec = _from_conversation(row, root)
        else:
            raise BadSample(MALFORMED_RECORD, f"a row must be a JSON list or object, got {type(row).__name__}")
    except BadSample:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
        raise BadSample(MALFORMED_RECORD, f"{type(err).__name__}: {err}") from None
    _check_text(rec)
    if where:
        rec.meta.setdefault("where", where)
    return rec


def _loads_text(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise BadSample(MALFORMED_JSON, str(err)) from None


def _from_conversation(conv: Any, root) -> StreamRecord:
    if not isinstance(conv, list) or not conv:
        raise BadSample(MALFORMED_RECORD, "a conversation must be a non-empty list of messages")
    video = None
    previous, title = "", ""
    words: list[Word] = []
    for msg in conv:
        content = msg["content"]
        if isinstance(content, str):
            continue
        for item in content:
            kind = item.get("type")
            if kind == "video":
                video = item
            elif kind == "text":
                previous = item.get("previous") or previous
                title = item.get("title") or title
            elif kind == "text_stream":
                words += _words(item["text_stream"])
    if video is None:
        raise BadSample(MALFORMED_RECORD, "conversation has no video item")
    return _record(video.get("video"), video.get("video_start"), video.get("video_end"), words, previous, title,
                   root, {k: v for k, v in video.items() if k not in ("type", "video", "video_start", "video_end")})


def _triples(value: Any, text_key: str) -> list:
    """[[s, e, text], ...] given as such, as a JSON string (Arrow cannot store mixed lists), or as dicts."""
    if isinstance(value, str):
        value = _loads_text(value)
    return [(x["start"], x["end"], x[text_key]) if isinstance(x, dict) else x for x in (value or [])]


def _from_flat_row(row: dict, root) -> StreamRecord:
    return _record(row.get("video"), row.get("video_start"), row.get("video_end"),
                   _words(_triples(row["text_stream"], "word")),
                   row.get("previous") or "", row.get("title") or "", root,
                   {k: row[k] for k in ("id", "video_id", "event_id") if k in row})


def _from_eval_row(row: dict, root) -> StreamRecord:
    words: list[Word] = []
    lines = _triples(row["content"], "text")
    for line in lines:
        s, e, text = float(line[0]), float(line[1]), line[2]
        if not (math.isfinite(s) and math.isfinite(e)) or e < s:
            raise BadSample(MALFORMED_RECORD, f"bad line times [{s}, {e}]")
        if not isinstance(text, str):
            raise BadSample(MALFORMED_RECORD, f"content text must be a string, got {type(text).__name__}")
        words += split_line(s, e, text)
    start = row.get("video_start")
    end = row.get("video_end")
    if start is None:
        start = math.floor(min(float(x[0]) for x in lines)) if lines else 0.0
    if end is None:
        end = math.ceil(max(float(x[1]) for x in lines)) if lines else start
    return _record(row.get("video"), start, end, words, row.get("preasr") or row.get("previous") or "",
                   row.get("title") or "", root, {k: row[k] for k in ("id", "video_id", "event_id") if k in row})


def split_line(s: float, e: float, text: str) -> list[Word]:
    """One timed line -> words with evenly interpolated times over [s, e]."""
    parts = text.split()
    if not parts:
        return []
    step = (e - s) / len(parts)
    return [(s + i * step, s + (i + 1) * step, w) for i, w in enumerate(parts)]


def _words(stream: Iterable) -> list[Word]:
    out = []
    for item in stream:
        s, e, w = float(item[0]), float(item[1]), item[2]
        if not isinstance(w, str):
            raise BadSample(MALFORMED_RECORD, f"a word must be a string, got {type(w).__name__}")
        if not (math.isfinite(s) and math.isfinite(e)) or e < s:
            raise BadSample(MALFORMED_RECORD, f"bad word times [{s}, {e}] for {w!r}")
        w = w.strip()
        if w:
            out.append((s, e, w))
    return out


def _record(video, start, end, words, previous, title, root, meta) -> StreamRecord:
    words = sorted(words, key=lambda w: (w[1], w[0]))
    start = 0.0 if start is None else float(start)
    end = (words[-1][1] if words else start) if end is None else float(end)
    if not (math.isfinite(start) and math.isfinite(end)) or end < start or start < 0:
        raise BadSample(MALFORMED_RECORD, f"bad span [{start}, {end}]")
    if not isinstance(previous, str) or not isinstance(title, str):
        raise BadSample(MALFORMED_RECORD, "previous/title must be strings")
    return StreamRecord(video=resolve_video(video, root), start=start, end=end, words=words, previous=previous,
                        title=title, meta=dict(meta))


def _check_text(rec: StreamRecord) -> None:
    """Strings that cannot be encoded as UTF-8 (lone surrogates from JSON escapes) are non-UTF-8 text."""
    try:
        rec.previous.encode("utf-8")
        rec.title.encode("utf-8")
        for w in rec.words:
            w[2].encode("utf-8")
    except UnicodeEncodeError as err:
        raise BadSample(NON_UTF8, f"text is not valid UTF-8: {err.reason}") from None


# ---- JSONL with byte offsets ------------------------------------------------------------------------------------
def seeks_sidecar(path: str | os.PathLike) -> Path:
    """`X_seeks.jsonl` for `X_with_seeks.jsonl` (else `X_seeks.jsonl` for `X.jsonl`)."""
    path = Path(path)
    stem = path.name[:-len(".jsonl")] if path.name.endswith(".jsonl") else path.name
    stem = stem[:-len("_with_seeks")] if stem.endswith("_with_seeks") else stem
    return path.with_name(f"{stem}_seeks.jsonl")


class JsonlSource:
    """Random access to the rows of a JSONL file by byte offset."""

    def __init__(self, path: str | os.PathLike, root: str | os.PathLike | None = None,
                 seeks: str | os.PathLike | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"data file not found: {self.path}")
        self.root = str(root) if root is not None else str(self.path.parent)
        self.rescanned: dict | None = None  # set when the seeks sidecar was stale and the file was rescanned
        self.size = self.path.stat().st_size
        self.offset_origin, self.offsets = self._find_offsets(seeks)
        for off in self.offsets:
            if not 0 <= off < self.size:
                raise UserError(f"{self.offset_origin} for {self.path} does not match the file: offset {off} is "
                                f"outside its {self.size} bytes; regenerate the seeks")

    def _find_offsets(self, seeks) -> tuple[str, list[int]]:
        sidecar = Path(seeks) if seeks is not None else seeks_sidecar(self.path)
        if seeks is not None and not sidecar.is_file():
            raise UserError(f"seeks file not found: {sidecar}")
        if sidecar.is_file() and sidecar != self.path:
            offsets = _read_offsets(sidecar)
            problem = self._offsets_mismatch(offsets)
            if problem is None:
                return f"seeks file {sidecar}", offsets
            rows = _scan_offsets(self.path)
            log.warning("seeks file %s does not match %s (%s): rescanned the file, %d rows (the seeks file listed "
                        "%d); its rows are checked and bad ones counted like any others", sidecar, self.path.name,
                        problem, len(rows), len(offsets))
            self.rescanned = {"sidecar": str(sidecar), "problem": problem, "rows": len(rows),
                              "sidecar_rows": len(offsets)}
            return f"a rescan of the file (stale seeks file {sidecar})", rows
        last = _last_line(self.path)
        if last:
            try:
                value = json.loads(last)
            except (json.JSONDecodeError, UnicodeDecodeError):
                value = None
            if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool)
                                                         for v in value):
                return "the offsets on its last line", value
        return "a scan of the file", _scan_offsets(self.path)

    def _offsets_mismatch(self, offsets: list[int]) -> str | None:
        """Why a sidecar's offsets do not describe this file (None: they do). Cheap: the file's size and the last
        offset, whose line must end the file, so rows appended (or removed) since the sidecar was written show."""
        if not offsets:
            return "no offsets" if self.size else None
        if any(b <= a for a, b in zip(offsets, offsets[1:])) or offsets[0] < 0:
            return "offsets not increasing"
        if offsets[-1] >= self.size:
            return f"last offset {offsets[-1]} is past the file's {self.size} bytes"
        with open(self.path, "rb") as f:
            if offsets[-1] > 0:
                f.seek(offsets[-1] - 1)
                if f.read(1) != b"\n":
                    return f"last offset {offsets[-1]} is not at the start of a line"
            f.seek(offsets[-1])
            f.readline()
            rest = f.read()
        if rest.strip():
            extra = len([ln for ln in rest.splitlines() if ln.strip()])
            return f"{extra} more line(s) after its last offset"
        return None

    def __len__(self) -> int:
        return len(self.offsets)

    def where(self, i: int) -> str:
        return f"{self.path.name} row {i}"

    def raw(self, i: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(self.offsets[i])
            return f.readline()

    def __getitem__(self, i: int) -> StreamRecord:
        line = self.raw(i)
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise BadSample(NON_UTF8, f"{self.where(i)}: bytes {err.start}-{err.end} are not UTF-8") from None
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            raise BadSample(MALFORMED_JSON, f"{self.where(i)}: {err}") from None
        try:
            return record_from_row(row, self.root, self.where(i))
        except BadSample as err:
            raise BadSample(err.reason, f"{self.where(i)}: {err.detail}") from None


def _read_offsets(path: Path) -> list[int]:
    text = path.read_text(encoding="utf-8").strip()
    try:
        value = json.loads(text)
        if isinstance(value, list):
            return [int(v) for v in value]
        if isinstance(value, int):
            return [value]
    except json.JSONDecodeError:
        pass
    try:
        out = []
        for line in text.splitlines():
            line = line.strip()
            if line:
                v = json.loads(line)
                out += [int(x) for x in v] if isinstance(v, list) else [int(v)]
        return out
    except (json.JSONDecodeError, TypeError, ValueError):
        raise UserError(f"cannot read byte offsets from {path}: expected a JSON list of integers") from None


def _last_line(path: Path, max_bytes: int = 64 << 20) -> bytes:
    size = path.stat().st_size
    with open(path, "rb") as f:
        block = 1 << 16
        pos, tail = size, b""
        while pos > 0 and len(tail) < max_bytes:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            tail = f.read(step) + tail
            stripped = tail.rstrip(b"\r\n")
            if b"\n" in stripped:
                return stripped[stripped.rindex(b"\n") + 1:]
        return tail.rstrip(b"\r\n") if pos == 0 else b""


def _scan_offsets(path: Path) -> list[int]:
    out, pos = [], 0
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                out.append(pos)
            pos += len(line)
    return out


# ---- Hugging Face datasets (or any list of rows) ------------------------------------------------------------------
class HFSource:
    """Rows of a `datasets.Dataset` (or any sequence of dicts) as records."""

    def __init__(self, rows: Sequence[dict], root: str | os.PathLike | None = None, name: str = "dataset"):
        self.rows = rows
        self.root = str(root) if root is not None else None
        self.name = name

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, i: int) -> str:
        return f"{self.name} row {i}"

    def __getitem__(self, i: int) -> StreamRecord:
        try:
            return record_from_row(self.rows[i], self.root, self.where(i))
        except BadSample as err:
            raise BadSample(err.reason, f"{self.where(i)}: {err.detail}") from None


def open_source(spec: str | os.PathLike, root: str | os.PathLike | None = None, split: str = "train"):
    """A JSONL path, a `save_to_disk` directory, a parquet file, or `hf:name[:config]` -> a source."""
    spec = str(spec)
    if spec.startswith("hf:"):
        import datasets

        name, _, config = spec[3:].partition(":")
        try:
            ds = datasets.load_dataset(name, config or None, split=split)
        except Exception as err:  # offline, unknown name, bad config: one line for the user
            raise UserError(f"cannot load Hugging Face dataset {name!r}: {str(err).splitlines()[0]}") from None
        return HFSource(ds, root, name)
    path = Path(spec)
    if path.is_dir():
        import datasets

        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as err:
            raise UserError(f"{path} is not a saved Hugging Face dataset: {str(err).splitlines()[0]}") from None
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise UserError(f"{path} has no split {split!r} (it has {', '.join(ds)})")
            ds = ds[split]
        return HFSource(ds, root if root is not None else path, path.name)
    if not path.exists():
        raise UserError(f"data file not found: {path}")
    if path.suffix == ".parquet":
        import datasets

        ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
        return HFSource(ds, root if root is not None else path.parent, path.name)
    return JsonlSource(path, root)
