"""Pretrain a checkpoint's vision tower (blocks, merger, DeepStack mergers) on labelled frames, in place.

    python -m streaming_vlm.model.vision_pretrain --model checkpoints/tiny-qwen3vl --data outputs/demo/data

The real Qwen3-VL comes with a pretrained vision tower; the tiny default's is random: its features for a goal second
point almost where every other second's do (mean cosine 0.96 to normal seconds, as between two normal ones), and
the tiny language model, trained for a CPU demo's few hundred steps, does not learn to read them (BENCHMARKS.md,
issue 26). This gives the tiny default a tower whose features carry the events:
a short supervised pretraining on the frames of a synthetic dataset's games (`python -m data.synthetic`), each second
labelled with the event types of the game's event log active in it (an event at t is active over [t, t + hold)),
read at 2 fps and resized exactly as training and inference read them (one second per video, the given pixel
budget). A linear probe per tower output (the merger's and each DeepStack merger's tokens, mean-pooled over a
second) learns with the tower; the probes are then dropped and only the tower's weights are written back into the
checkpoint's safetensors, so the trainer's frozen tower is a pretrained one. Only the split named by --split (default
train) is read: held-out games stay unseen.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

from streaming_vlm.errors import UserError, cli_entry

DEFAULT_TYPES = ("goal", "save", "corner", "shot", "foul", "throw_in", "goal_kick", "miss", "kickoff")
INFO_FILE = "vision_pretraining.json"  # also named in tiny.build_checkpoint, which removes it


def second_labels(events: list[dict], n_seconds: int, types: tuple[str, ...], hold: float) -> "list[list[int]]":
    """Per second [s, s+1): 1 for each type with an event whose [t, t + hold) overlaps it."""
    rows = [[0] * len(types) for _ in range(n_seconds)]
    index = {k: i for i, k in enumerate(types)}
    for e in events:
        k = index.get(e.get("type"))
        if k is None:
            continue
        t = float(e["t"])
        for s in range(max(0, math.floor(t)), min(n_seconds, math.ceil(t + hold))):
            if s < t + hold and s + 1 > t:
                rows[s][k] = 1
    return rows


def load_seconds(data: Path, split: str, processor, min_pixels: int, max_pixels: int, fps: float = 2.0,
                 types: tuple[str, ...] = DEFAULT_TYPES, hold: float = 2.0, max_games: int | None = None):
    """Every second of the split's games as the tower's input: (pixel_values, grid_thw, labels (S, types))."""
    import torch

    from streaming_vlm.data.stream_template import StreamTemplate, VisionBudget
    from streaming_vlm.data.video import VideoError, VideoReader

    logs = sorted((data / "events" / split).glob("*.json"))
    if not logs:
        raise UserError(f"no event logs in {data / 'events' / split}: make the data with `python -m data.synthetic`")
    if max_games:
        logs = logs[:max_games]
    template = StreamTemplate(processor, budget=VisionBudget(min_pixels=min_pixels, max_pixels=max_pixels,
                                                              total_pixels=max_pixels * 64))
    pixels, grids, labels = [], [], []
    for log in logs:
        doc = json.loads(log.read_text())
        try:
            reader = VideoReader(data / doc["video"], fps=fps)
            seconds = reader.seconds(0, reader.duration)
        except (VideoError, KeyError) as err:
            raise UserError(f"cannot read the video of {log}: {err}") from None
        rows = second_labels(doc.get("events", []), len(seconds), types, hold)
        for s, row in zip(seconds, rows):
            if not len(s.frames):
                continue
            enc = template.encode_second(s, 0)
            pixels.append(enc.pixel_values_videos)
            grids.append(enc.video_grid_thw)
            labels.append(row)
    return torch.cat(pixels), torch.cat(grids), torch.tensor(labels, dtype=torch.float32)


def pooled_features(visual, pixel_values, grid, merge: int):
    """Mean over each second's merged tokens, for the merger and each DeepStack merger: list of (S, D)."""
    import torch

    out = visual(pixel_values, grid_thw=grid)
    per = (grid.prod(-1) // (merge * merge)).tolist()
    feats = [out.pooler_output] + list(out.deepstack_features)
    return [torch.stack([c.mean(0) for c in f.split(per)]) for f in feats]


def probe_scores(logits, labels, types) -> dict:
    """Per type: recall and precision of the probe's decisions (logit > 0) against the labels."""
    pred, truth = logits > 0, labels > 0
    out = {}
    for i, k in enumerate(types):
        tp = int((pred[:, i] & truth[:, i]).sum())
        out[k] = {"recall": tp / max(1, int(truth[:, i].sum())), "precision": tp / max(1, int(pred[:, i].sum())),
                  "positives": int(truth[:, i].sum())}
    return out


def separation(visual, pixel_values, grid, labels, merge: int, type_index: int = 0) -> dict:
    """Mean cosine between the merger's per-second features: event-vs-normal and normal-vs-normal pairs."""
    import torch

    with torch.no_grad():
        f = pooled_features(visual, pixel_values, grid, merge)[0]
    f = torch.nn.functional.normalize(f, dim=-1)
    pos = labels[:, type_index] > 0
    normal = labels.sum(1) == 0
    if not pos.any() or normal.sum() < 2:
        return {"event_vs_normal": float("nan"), "normal_vs_normal": float("nan")}
    n = f[normal]
    nn_ = (n @ n.T)
    k = nn_.shape[0]
    nn_mean = (nn_.sum() - nn_.diagonal().sum()) / (k * (k - 1))
    return {"event_vs_normal": float((f[pos] @ n.T).mean()), "normal_vs_normal": float(nn_mean)}


def pretrain_vision(model_path: str | os.PathLike, data: str | os.PathLike, split: str = "train", steps: int = 150,
                    lr: float = 3e-3, min_pixels: int = 4096, max_pixels: int = 4096, hold: float = 2.0,
                    types: tuple[str, ...] = DEFAULT_TYPES, seed: int = 0, batch: int = 256,
                    check_split: str | None = None, log=print) -> dict:
    """Train the tower of the checkpoint at `model_path` on `data`'s `split` and write it back. Returns a summary."""
    import torch
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    model_path, data = Path(model_path), Path(data)
    if not (model_path / "config.json").is_file():
        raise UserError(f"{model_path} is not a checkpoint folder (no config.json)")
    if steps < 1:
        raise UserError(f"--steps must be at least 1, got {steps}")
    t0 = time.time()
    processor = AutoProcessor.from_pretrained(model_path)
    pixel_values, grid, labels = load_seconds(data, split, processor, min_pixels, max_pixels, types=types, hold=hold)
    t_data = time.time() - t0
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration.from_pretrained(model_path, dtype=torch.float32)
    visual = model.model.visual
    merge = visual.spatial_merge_size
    before = separation(visual, pixel_values, grid, labels, merge)
    n_out = 1 + len(visual.deepstack_merger_list)
    dim = model.config.vision_config.out_hidden_size
    probes = torch.nn.ModuleList(torch.nn.Linear(dim, len(types)) for _ in range(n_out))
    visual.train()
    params = list(visual.parameters()) + list(probes.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    # 20 steps of linear warmup, then cosine decay to 0
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / 20) * 0.5 * (1 + math.cos(math.pi * i / steps)))
    pos = labels.sum(0)
    pos_weight = ((labels.shape[0] - pos) / pos.clamp(min=1)).clamp(max=30.0)
    bce = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    # the seconds as patch ranges, so a batch of seconds picks its patches
    patches = grid.prod(-1)
    starts = torch.cat([torch.zeros(1, dtype=torch.long), patches.cumsum(0)])
    n = labels.shape[0]
    g = torch.Generator().manual_seed(seed)
    # event seconds are rare: each batch draws half of its seconds from those with some label
    has = (labels.sum(1) > 0).nonzero().squeeze(1)
    none = (labels.sum(1) == 0).nonzero().squeeze(1)
    if not len(has) or not len(none):
        raise UserError(f"the {split} games of {data} need seconds with and without events of "
                        f"{', '.join(types)} to learn from")
    loss_v = float("nan")
    for step in range(steps):
        half = min(batch // 2, len(has))
        pick = torch.cat([has[torch.randint(len(has), (half,), generator=g)],
                          none[torch.randint(len(none), (batch - half,), generator=g)]])
        pv = torch.cat([pixel_values[starts[i]:starts[i + 1]] for i in pick.tolist()])
        feats = pooled_features(visual, pv, grid[pick], merge)
        loss = sum(bce(p(f), labels[pick]) for p, f in zip(probes, feats)) / n_out
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        loss_v = float(loss.detach())
        if step % 50 == 0 or step == steps - 1:
            log(f"vision pretraining: step {step + 1}/{steps}, loss {loss_v:.4f}")
    visual.eval()
    with torch.no_grad():
        logits = probes[0](pooled_features(visual, pixel_values, grid, merge)[0])
    recall = probe_scores(logits, labels, types)
    after = separation(visual, pixel_values, grid, labels, merge)
    held_out = None
    if check_split:
        pv_c, grid_c, labels_c = load_seconds(data, check_split, processor, min_pixels, max_pixels, types=types,
                                              hold=hold)
        with torch.no_grad():
            logits_c = probes[0](pooled_features(visual, pv_c, grid_c, merge)[0])
        held_out = {"split": check_split, "seconds": int(labels_c.shape[0]),
                    "probe": probe_scores(logits_c, labels_c, types),
                    "goal_cosine": separation(visual, pv_c, grid_c, labels_c, merge)}
    # write the tower back: the checkpoint's other weights and files stay as they were
    import tempfile

    cfg = json.loads((model_path / "config.json").read_text())
    saved = getattr(torch, str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32"), torch.float32)
    with tempfile.TemporaryDirectory(dir=model_path.parent) as tmp:
        model.to(saved).save_pretrained(tmp, safe_serialization=True)  # in the dtype the checkpoint had
        del model, visual
        for f in Path(tmp).glob("*.safetensors*"):
            os.replace(f, model_path / f.name)
    summary = {"data": str(data), "split": split, "seconds": n, "steps": steps, "lr": lr, "hold_s": hold,
               "pixels": [min_pixels, max_pixels], "types": list(types),
               "positives": {k: int(pos[i]) for i, k in enumerate(types)}, "final_loss": loss_v,
               "probe_on_training_seconds": recall, "held_out": held_out,
               "goal_cosine_before": before, "goal_cosine_after": after,
               "seconds_data": round(t_data, 1), "seconds_total": round(time.time() - t0, 1)}
    (model_path / INFO_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    from streaming_vlm.model.tiny import FACTORY_MARKER

    marker = model_path / FACTORY_MARKER
    if marker.is_file():  # the factory's record of what it built: say that the tower is no longer the random one
        with marker.open("a") as f:
            f.write(f"vision tower pretrained by streaming_vlm.model.vision_pretrain on {data} ({split}), "
                    f"{steps} steps: {INFO_FILE}\n")
    return summary


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint folder whose vision tower is trained and rewritten")
    parser.add_argument("--data", required=True, help="a `python -m data.synthetic` folder (videos/ and events/)")
    parser.add_argument("--split", default="train", help="which split's games to read (default train)")
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps (default 150)")
    parser.add_argument("--lr", type=float, default=3e-3, help="learning rate (default 3e-3)")
    parser.add_argument("--batch", type=int, default=256, help="seconds per step (default 256)")
    parser.add_argument("--min-pixels", type=int, default=4096, help="per frame, as training reads (default 4096)")
    parser.add_argument("--max-pixels", type=int, default=4096, help="per frame, as training reads (default 4096)")
    parser.add_argument("--hold", type=float, default=2.0, help="seconds an event stays labelled (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-split", default=None,
                        help="also score the probe on this split's games (e.g. eval), as a held-out check")
    args = parser.parse_args(argv)
    s = pretrain_vision(args.model, args.data, split=args.split, steps=args.steps, lr=args.lr, batch=args.batch,
                        min_pixels=args.min_pixels, max_pixels=args.max_pixels, hold=args.hold, seed=args.seed,
                        check_split=args.check_split)
    b, a = s["goal_cosine_before"], s["goal_cosine_after"]
    rec = ", ".join(f"{k} {v['recall']:.0%}/{v['precision']:.0%}" for k, v in s["probe_on_training_seconds"].items())
    print(f"pretrained the vision tower of {args.model} on {s['seconds']} s of {args.split} games "
          f"({s['seconds_total']:.0f} s); goal-vs-normal cosine {b['event_vs_normal']:.2f} -> "
          f"{a['event_vs_normal']:.2f} (normal-vs-normal {b['normal_vs_normal']:.2f} -> {a['normal_vs_normal']:.2f}); "
          f"probe recall/precision on its training seconds: {rec}")
    if s["held_out"]:
        h = s["held_out"]
        rec = ", ".join(f"{k} {v['recall']:.0%}/{v['precision']:.0%} of {v['positives']}"
                        for k, v in h["probe"].items())
        cos = h["goal_cosine"]
        print(f"held-out {h['split']} games ({h['seconds']} s): probe recall/precision {rec}; goal-vs-normal cosine "
              f"{cos['event_vs_normal']:.2f} (normal-vs-normal {cos['normal_vs_normal']:.2f})")


if __name__ == "__main__":
    main()
