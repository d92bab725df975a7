"""Does a commentator's output read like commentary? Three word-level figures on held-out games.

- vocabulary: the fraction of emitted words that occur anywhere in the training commentary (words as the offline
  judge reads them: lowercased runs of letters, digits and apostrophes), i.e. how much of the output is made of
  commentary words rather than arbitrary tokens of the tokenizer's vocabulary;
- grounding: recall (and precision, with its shifted-log chance control) of the event types named within ±tol s
  of the events in the game's log (`grounding.event_scores`);
- similarity: the offline judge's word-level ROUGE-L F1 against the reference commentary, averaged over the
  evaluation's segments (`segments.inf_streams_segments`); a segment the system has no output for scores 0.

`python -m streaming_vlm.eval quality` computes them from the files `generate` and the data generator write.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from streaming_vlm.errors import UserError
from streaming_vlm.eval.grounding import event_scores
from streaming_vlm.eval.offline_judge import similarity, words
from streaming_vlm.eval.predictions import SystemOutputs, candidate_text, clean_output_text
from streaming_vlm.eval.segments import inf_streams_segments

GROUNDED_TYPES = ("goal", "corner", "save")  # the events a viewer most expects named
GROUNDING_TOLERANCE = 3.0
CONTROL_SHIFT = 60.0


def commentary_vocabulary(texts: Iterable[str]) -> set[str]:
    """Every word of the given commentary texts."""
    vocab: set[str] = set()
    for text in texts:
        vocab.update(words(text))
    return vocab


def training_vocabulary(paths: Sequence[str | os.PathLike]) -> set[str]:
    """The words of every record's commentary in training data files (any format `open_source` reads)."""
    from streaming_vlm.data.bad_samples import BadSample
    from streaming_vlm.data.sources import open_source

    vocab: set[str] = set()
    for path in paths:
        source = open_source(path)
        for i in range(len(source)):
            try:
                record = source[i]
            except BadSample:
                continue  # the trainer skips and counts these too; their words were never trained on
            vocab |= commentary_vocabulary(w[2] for w in record.words)
    if not vocab:
        raise UserError(f"no commentary words in {', '.join(map(str, paths))}")
    return vocab


def in_vocabulary(outputs: SystemOutputs, vocab: set[str]) -> dict:
    """Emitted words (the silence placeholder removed) and how many of them are in `vocab`."""
    emitted = [w for outs in outputs.by_video.values() for o in outs for w in words(clean_output_text(o.text))]
    known = sum(w in vocab for w in emitted)
    return {"words": len(emitted), "in_vocabulary": known, "fraction": known / len(emitted) if emitted else 0.0}


def segment_similarity(outputs: SystemOutputs, reference_rows: Sequence[Mapping], segment_seconds: float,
                       min_words: int) -> dict:
    """Mean word-level ROUGE-L F1 against the reference over the evaluation's segments."""
    segments = inf_streams_segments(reference_rows, segment_seconds=segment_seconds, min_words=min_words)
    scores = [similarity(candidate_text(outputs, seg) or "", seg.reference) for seg in segments]
    return {"segments": len(scores), "mean": sum(scores) / len(scores) if scores else 0.0, "per_segment": scores}


def grounding(outputs: SystemOutputs, event_logs: Mapping[str, Sequence[Mapping]],
              types: Sequence[str] = GROUNDED_TYPES, tol: float = GROUNDING_TOLERANCE) -> dict:
    """Event recall/precision summed over the videos that have an event log, and the chance control."""
    totals = {"events": 0, "recalled": 0, "mentions": 0, "grounded": 0, "grounded_control": 0}
    for video, events in event_logs.items():
        rows = [{"start": o.start, "end": o.end, "text": clean_output_text(o.text)}
                for o in outputs.by_video.get(video, ())]
        s = event_scores(rows, events, tol=tol, types=types)
        for k in ("events", "recalled", "mentions", "grounded"):
            totals[k] += s[k]
        totals["grounded_control"] += event_scores(rows, events, tol=tol, shift=CONTROL_SHIFT, types=types)["grounded"]
    m = max(totals["mentions"], 1)
    return {**totals, "types": list(types), "tolerance_s": tol,
            "recall": totals["recalled"] / max(totals["events"], 1), "precision": totals["grounded"] / m,
            "precision_control": totals["grounded_control"] / m}


def read_event_logs(folder: str | os.PathLike) -> dict[str, list]:
    """{video: events} from the generator's per-game event files (`events/<split>/game_*.json`)."""
    folder = Path(folder)
    files = sorted(p for p in folder.glob("*.json"))
    if not files:
        raise UserError(f"no event logs (*.json) in {folder}")
    logs = {}
    for path in files:
        try:
            doc = json.loads(path.read_text())
            logs[doc["video"]] = doc["events"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise UserError(f"{path} is not an event log ({err.__class__.__name__})") from None
    return logs


def commentary_quality(outputs: SystemOutputs, reference_rows: Sequence[Mapping], vocab: set[str],
                       event_logs: Mapping[str, Sequence[Mapping]] | None, segment_seconds: float,
                       min_words: int) -> dict:
    """All three figures for one system's outputs."""
    report = {"vocabulary": in_vocabulary(outputs, vocab),
              "similarity": segment_similarity(outputs, reference_rows, segment_seconds, min_words)}
    if event_logs is not None:
        report["grounding"] = grounding(outputs, event_logs)
    return report


def format_quality(report: dict) -> str:
    v, s = report["vocabulary"], report["similarity"]
    lines = [f"commentary words: {100 * v['fraction']:.1f}% of {v['words']} emitted words occur in the training "
             "commentary",
             f"ROUGE-L vs reference: {s['mean']:.3f} (mean of {s['segments']} segments)"]
    g = report.get("grounding")
    if g is not None:
        lines.insert(1, f"grounded mentions: {g['recalled']} of {g['events']} {'/'.join(g['types'])} events named "
                        f"within ±{g['tolerance_s']:g} s ({100 * g['recall']:.0f}%); precision "
                        f"{100 * g['precision']:.0f}% of {g['mentions']} mentions (chance "
                        f"{100 * g['precision_control']:.0f}%)")
    return "\n".join(lines)
