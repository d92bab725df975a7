"""Evaluation of a streaming commentator against a baseline, judged pairwise in both orders (StreamingVLM protocols).

Read in this order:
- `segments.py`      Inf-Streams-Eval: cut reference games into 100 s segments with >= 200 reference words
- `livesports.py`    LiveSports-3K-CC: one segment per event, reference = the human event commentary
- `predictions.py`   a system's outputs and the candidate text they give a segment ((start, end] end-time rule)
- `prompts.py`       the judge instructions per protocol, candidates capped at 8000 characters
- `verdict.py`       Verdict, the strict A/B answer rule, the Judge interface
- `offline_judge.py` deterministic judge: word-level ROUGE-L F1 against the reference, with a tie margin
- `chat_client.py`   the one HTTP client for OpenAI-compatible chat endpoints (timeouts, bounded retries, usage)
- `openai_judge.py`  LLM judge on any OpenAI-compatible chat-completions endpoint
- `append_log.py`    append-only JSON-lines key -> answer store behind every resumable request cache
- `judge_cache.py`   verdict cache on it: interrupted runs resume without paying twice
- `head_to_head.py`  every segment judged twice (model as A, then as B) on a bounded thread pool
- `win_rate.py`      win rate overall and per video; ties, invalid and missing counted, never dropped
- `pipeline.py`      all of it as function calls (`win_rate_from_outputs` for trainer callbacks)
- `bootstrap.py`     bootstrap 95% interval of the win rate, resampling segments
- `report_markdown.py` the report as a markdown table
- `generate.py`      hook to the streaming inference engine
- `sharded_generate.py` the reference's videos over N workers (processes, GPUs, torchrun), resumable per video
- `baseline_protocol.py` what one request of the vision-chat baseline holds (windows, frames, context, prompts)
- `baseline.py`      `eval baseline`: the baseline's commentary, cached and resumable, with its cost
- `evaluate.py`      `eval run`: generate what is missing, judge, report
- `grounding.py`     event mentions against a game's event log (recall, precision, chance control)
- `quality.py`       word-level figures of one system: commentary words, grounded mentions, ROUGE-L per segment
- `cli.py`           `python -m streaming_vlm.eval {judge,report,generate,baseline,run,quality}`
"""

from streaming_vlm.eval.head_to_head import judge_segments, run_comparisons
from streaming_vlm.eval.judge_cache import JudgeCache, cache_key
from streaming_vlm.eval.livesports import event_row_from_hf, livesports_segments
from streaming_vlm.eval.offline_judge import OfflineJudge
from streaming_vlm.eval.openai_judge import JudgeRejected, JudgeUnavailable, OpenAIJudge
from streaming_vlm.eval.pipeline import judge_outputs, make_judge, segments_for, win_rate_from_outputs
from streaming_vlm.eval.predictions import SystemOutputs, candidate_text, load_outputs, outputs_from_segments
from streaming_vlm.eval.segments import Segment, inf_streams_segments
from streaming_vlm.eval.verdict import Judge, Verdict, parse_choice
from streaming_vlm.eval.win_rate import format_table, win_rate_report

__all__ = [
    "JudgeCache",
    "Judge",
    "JudgeRejected",
    "JudgeUnavailable",
    "OfflineJudge",
    "OpenAIJudge",
    "Segment",
    "SystemOutputs",
    "Verdict",
    "cache_key",
    "candidate_text",
    "event_row_from_hf",
    "format_table",
    "inf_streams_segments",
    "judge_outputs",
    "judge_segments",
    "livesports_segments",
    "load_outputs",
    "make_judge",
    "outputs_from_segments",
    "parse_choice",
    "run_comparisons",
    "segments_for",
    "win_rate_from_outputs",
    "win_rate_report",
]
