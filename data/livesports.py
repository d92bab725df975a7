"""Convert LiveSports-3K-CC (HF `stdKonjac/LiveSports-3K`, config `LiveSports_3K_CC`, split `test`) into our rows.

Input: any iterable of dicts with the dataset's fields `video_id, event_id, begin, end, event_title, preasr_text,
event_asr_text` (a list, a JSONL/Parquet export, or `datasets.load_dataset(...)` output). Output:

- event rows for the judge (`streaming_vlm.eval`), one per event:
      {"video", "event_id", "start", "end", "title", "preasr", "reference"}
- `StreamRecord`s for running the model on each event clip (`previous` = the pre-event commentary).

Nothing is downloaded by the functions; only the CLI's `--source` may name a HF dataset, which `datasets` then loads
from its local cache (or the Hub, if the machine can reach it):

    python -m data.livesports --out data/livesports_cc.jsonl                      # HF dataset (default name)
    python -m data.livesports --source export.parquet --out data/livesports_cc.jsonl
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from streaming_vlm.data.records import StreamRecord
from streaming_vlm.errors import UserError, cli_entry
from streaming_vlm.eval.jsonl import read_rows_strict, write_rows
from streaming_vlm.eval.livesports import HF_CONFIG, HF_DATASET, HF_SPLIT, event_row_from_hf
from streaming_vlm.output_files import check_output


def convert(hf_rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """HF rows -> our event rows, in order. A row without the required fields is a UserError naming its index."""
    rows, seen = [], set()
    for index, row in enumerate(hf_rows):
        event = event_row_from_hf(row, where=f"LiveSports row {index}")
        key = (event["video"], event["event_id"])
        if key in seen:
            where = f"LiveSports row {index}"
            raise UserError(f"{where}: event {event['event_id']} of video {event['video']} appears twice")
        seen.add(key)
        rows.append(event)
    if not rows:
        raise UserError("no LiveSports rows to convert")
    return rows


def to_stream_records(
    event_rows: Iterable[Mapping[str, Any]], video_root: str | os.PathLike = ""
) -> list[StreamRecord]:
    """Event rows -> records spanning each event clip; words stay empty (the event commentary has no timings)."""
    records = []
    for event in event_rows:
        video = str(Path(video_root) / event["video"]) if video_root else event["video"]
        records.append(
            StreamRecord(
                video=video,
                start=float(event["start"]),
                end=float(event["end"]),
                previous=event.get("preasr", ""),
                title=event.get("title", ""),
                meta={"event_id": event["event_id"], "video_id": event["video"], "reference": event["reference"]},
            )
        )
    return records


def load_source(source: str, config: str = HF_CONFIG, split: str = HF_SPLIT) -> Iterable[Mapping[str, Any]]:
    """A local .jsonl/.json/.parquet export, or a HF dataset name loaded with `datasets` (imported only here)."""
    path = Path(source)
    if path.suffix in (".jsonl", ".json"):
        return read_rows_strict(path, "LiveSports")
    try:
        import datasets
    except ImportError:
        raise UserError("reading Parquet or a HF dataset needs the `datasets` package (pip install datasets)") from None
    try:
        if path.suffix == ".parquet":
            if not path.exists():
                raise UserError(f"LiveSports file not found: {path}")
            return datasets.load_dataset("parquet", data_files=str(path), split="train")
        return datasets.load_dataset(source, config, split=split)
    except UserError:
        raise
    except Exception as err:  # datasets raises many types (network, missing config); the user needs one line
        reason = f"{type(err).__name__}: {str(err)[:200]}"
        raise UserError(f"cannot load LiveSports rows from {source!r} ({reason})") from None


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.livesports", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=HF_DATASET, help="HF dataset name or a local .jsonl/.json/.parquet export")
    parser.add_argument("--config", default=HF_CONFIG)
    parser.add_argument("--split", default=HF_SPLIT)
    parser.add_argument("--out", required=True, help="event rows JSONL to write")
    args = parser.parse_args(argv)
    check_output(args.out, (args.source,), "--out")  # before any rows are read or downloaded
    rows = convert(load_source(args.source, args.config, args.split))
    write_rows(args.out, rows)
    print(f"wrote {len(rows)} LiveSports events to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
