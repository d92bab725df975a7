"""The trainer's side of the data pipeline (`streaming_vlm.data`): sources -> one dataset, the collator, the
bad-sample tracker, and first-use generation of the synthetic data set."""

from __future__ import annotations

import math
import os
import shutil
import time
from collections import Counter
from pathlib import Path

from streaming_vlm.errors import UserError

FRAMES_LINES = {"trainer": "decoded and tokenized by the loader workers, resized and normalised by the training "
                           "process on its device",
                "loader": "decoded, resized, normalised and tokenized by the loader workers"}

# Keys of configs/data/*.yaml that are ours, not the data builder's.
TRAINER_ONLY_KEYS = ("num_workers", "generate", "repeat")


def repeat_count(d: dict, key: str = "data") -> int:
    """`repeat`: how many times a source counts in the mix (upstream lists train_s12w24 twice, so it is seen twice)."""
    n = d.get("repeat", 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"{key}.repeat must be a whole number >= 1, got {n!r}")
    return n


def builder_config(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in TRAINER_ONLY_KEYS}


def resolve_file(d: dict, key: str = "train_file") -> str | None:
    """The data file path: as given, or relative to `root` when that is where it is."""
    f = d.get(key)
    if not f:
        return None
    if os.path.isabs(f) or os.path.exists(f) or f.startswith("hf:") or not d.get("root"):
        return f
    return str(Path(d["root"]) / f)


def ensure_generated(d: dict, timeout_s: float = 1800.0) -> None:
    """`data.generate`: build the synthetic data set into `root` when its train file is missing.

    One process generates into a temp dir and renames it into place; any other waits for the result."""
    gen = d.get("generate")
    path = resolve_file(d)
    if not gen or (path and os.path.exists(path)):
        return
    root = Path(d["root"])
    if int(os.environ.get("LOCAL_RANK", "0")) != 0:
        deadline = time.time() + timeout_s
        while not (path and os.path.exists(path)):
            if time.time() > deadline:
                raise UserError(f"timed out waiting for the synthetic data set in {root}")
            time.sleep(1.0)
        return
    from data.synthetic import generate_dataset

    if root.exists() and any(root.iterdir()):
        raise UserError(f"data.root {root} exists but has no {d['train_file']}; remove it or point data.root elsewhere")
    tmp = root.with_name(f"{root.name}.tmp{os.getpid()}")
    print(f"generating the synthetic data set in {root} ({dict(gen)})", flush=True)
    generate_dataset(tmp, **dict(gen))
    root.parent.mkdir(parents=True, exist_ok=True)
    if root.exists():
        shutil.rmtree(root)
    os.rename(tmp, root)


def _prepared(d: dict) -> dict:
    d = builder_config(d)
    for key in ("train_file", "eval_file"):
        if d.get(key):
            d[key] = resolve_file(d, key)
    return d


def frames_choice(sources: dict[str, dict], cuda: bool | None) -> tuple[dict[str, dict], str, str]:
    """(the sources with `process_frames` resolved, where, why): where every source's frames become pixels is the
    main source's `data.process_frames`, for all (a batch cannot mix the two forms)."""
    from streaming_vlm.data.dataset import frames_where

    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    where, why = frames_where(sources["data"].get("process_frames"), cuda)
    return {k: {**d, "process_frames": where} for k, d in sources.items()}, where, why


def build_train(sources: dict[str, dict], processor, cuda: bool | None = None, announce: bool = False):
    """(dataset, collator, tracker) for all sources (ConcatDataset when extra_data is set). `cuda`: does training
    run on CUDA (default: torch.cuda.is_available())."""
    from torch.utils.data import ConcatDataset

    from streaming_vlm.data.bad_samples import BadSampleTracker
    from streaming_vlm.data.collator import build_collator
    from streaming_vlm.data.dataset import build_train_dataset

    sources, where, why = frames_choice(sources, cuda)
    if announce:
        print(f"video frames: {FRAMES_LINES[where]} ({why})", flush=True)
    parts = [build_train_dataset(_prepared(d), processor) for d in sources.values()]
    mix = [p for p, (key, d) in zip(parts, sources.items()) for _ in range(repeat_count(d, key))]
    dataset = mix[0] if len(mix) == 1 else ConcatDataset(mix)
    main = _prepared(sources["data"])
    collator = build_collator(main, processor)
    index_bad = sum((Counter(p.index_bad) for p in parts), Counter())
    tracker = BadSampleTracker(float(main.get("max_bad_fraction", 0.05)), expected_total=None,
                               index_bad=index_bad, index_total=sum(p.n_records for p in parts))
    return dataset, collator, tracker


def set_expected_total(tracker, dataset, epochs: float, max_steps: int, per_rank_per_step: int, world: int) -> None:
    """Samples THIS rank will ask for (each rank's tracker sees its own shard)."""
    if max_steps and max_steps > 0:
        tracker.expected_total = int(max_steps) * int(per_rank_per_step)
    else:
        tracker.expected_total = math.ceil(len(dataset) * float(epochs) / max(world, 1))


def build_heldout(d: dict, processor, key: str = "data"):
    """Held-out windows of `eval_file` with the training chunking (None when there is no eval_file)."""
    from streaming_vlm.data.dataset import build_eval_dataset

    if not d.get("eval_file"):
        return None
    prepared = _prepared(d)
    if not os.path.exists(prepared["eval_file"]):
        raise UserError(f"held-out data file not found: {prepared['eval_file']} (set {key}.eval_file=...)")
    return build_eval_dataset(prepared, processor)


def build_heldout_mix(sources: dict[str, dict], processor, cuda: bool | None = None):
    """The held-out windows of every source with an `eval_file`, each `repeat` times, as upstream mixes its valid_*
    files like its train files (None when no source has one); frames processed where the training windows' are."""
    from torch.utils.data import ConcatDataset

    sources, _, _ = frames_choice(sources, cuda)
    mix = []
    for key, d in sources.items():
        part = build_heldout(d, processor, key)
        if part is not None:
            mix += [part] * repeat_count(d, key)
    if not mix:
        return None
    return mix[0] if len(mix) == 1 else ConcatDataset(mix)
