"""Batching for streaming SFT: right padding or packing, bad-sample counts, and a ZeRO-3-safe dummy video.

Batch dict (`StreamCollator(processor)(features)`):

    input_ids            (B, L) long, right-padded with the tokenizer's pad id
    attention_mask       (B, L) long, 0 on padding                      -- ABSENT when packed (see below)
    labels               (B, L) long, -100 on padding and everything that is not an assistant reply
    position_ids         (3, B, L) mRoPE t/h/w; packed: (4, B, L) with row 0 = per-sample text positions
    pixel_values_videos  (patches, C*T*P*P), every sample's, concatenated in token order; None when the frames
                         travel as `video_frames`
    video_grid_thw       (n_videos, 3)
    video_frames         `data.process_frames=trainer`: each sample's uint8 frames (`Encoded.frames`), in token
                         order; the trainer's `_prepare_inputs` turns them into pixel_values_videos on its device
                         (`stream_template.process_frames`) before the model sees the batch
    ---- metadata, NOT model inputs (use `split_batch`) ----
    bad_samples          {reason: n} of this batch's samples that could not be loaded (dropped, not replaced)
    n_samples            samples asked for (good + bad)        n_good       samples in the batch
    num_label_tokens     label tokens (0 -> `empty` is True: every sample was bad; the batch is valid but teaches
                         nothing: skip the loss or scale it by 0)
    num_vision_tokens    merged vision tokens (the dummy's excluded)
    num_tokens           tokens that are not padding        num_loss_tokens  labels the causal loss reads (shifted)
    loss_positions       (K,) long: positions t whose next token t+1 is labelled, in any row (the selective
                         loss's `logits_to_keep`), computed here on the CPU so the training step needs no sync
    dummy_vision         True when the batch carried no video and a dummy 2-frame 32x32 video was added
    packed               True for packed batches            sample_index  dataset indices of the good samples

ZeRO-3: every micro-batch carries pixel_values_videos, so every rank runs the vision tower on every step. When no
sample has video (an all-bad batch, a text-only sample), the collator appends ONE `<|video_pad|>` token for a zero
2x32x32 video (grid 1x2x2 -> one merged token) as padding: attention_mask 0, label -100 (packed: its own
one-token segment). The model's own forward runs the tower on it and scatters the result into that token, which no
real token attends to and no label reads: the loss and its gradients are exactly those of the batch without it.
The trainer does nothing special with `dummy_vision` except not count it as data.

Packing (`packing=True`): samples are concatenated into rows (all in one row, or rows of at most
`max_packed_tokens`); row 0 of the 4-row position_ids restarts at 0 for every sample, which is how transformers
(5.17-5.23: `find_packed_sequence_indices` for eager/sdpa, cu_seqlens for flash-attention) keeps attention inside
each sample. That detection only runs when there is NO attention_mask and NO KV cache: the batch has no
attention_mask, and `split_batch` adds `use_cache=False` for packed batches -- pass the model inputs as given.
flash-attention only detects packing in a batch of ONE row: with it, leave `max_packed_tokens` unset (eager and sdpa
handle several packed rows). Label shifting never crosses samples: every sample starts with an unlabelled token.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

import torch

from streaming_vlm.data.bad_samples import MARKER_KEY, is_bad
from streaming_vlm.data.stream_template import IGNORE_INDEX
from streaming_vlm.training.loss import count_label_tokens, kept_positions

MODEL_KEYS = ("input_ids", "attention_mask", "labels", "position_ids", "pixel_values_videos", "video_grid_thw",
              "video_frames")
FRAMES_KEY = "video_frames"  # not a model argument: the trainer replaces it by pixel_values_videos


def split_batch(batch: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model inputs for `model(**inputs)`, metadata for logging / the BadSampleTracker)."""
    inputs = {k: batch[k] for k in MODEL_KEYS if k in batch and batch[k] is not None}
    if batch.get("packed"):
        inputs["use_cache"] = False  # a KV cache disables packed-sequence detection in transformers
    meta = {k: v for k, v in batch.items() if k not in MODEL_KEYS}
    return inputs, meta


class StreamCollator:
    def __init__(self, processor, packing: bool = False, max_packed_tokens: int | None = None,
                 dummy_vision: bool = True, pad_to_multiple_of: int | None = None):
        tokenizer = getattr(processor, "tokenizer", processor)
        self.pad_id = tokenizer.pad_token_id
        if self.pad_id is None:
            raise ValueError("the tokenizer has no pad token")
        self.video_token_id = tokenizer.convert_tokens_to_ids("<|video_pad|>")
        vp = processor.video_processor
        self.merge = int(vp.merge_size)
        self.patch_dim = 3 * int(vp.temporal_patch_size) * int(vp.patch_size) ** 2
        self.packing = packing
        self.max_packed_tokens = max_packed_tokens
        self.dummy_vision = dummy_vision
        self.pad_to_multiple_of = pad_to_multiple_of

    # ---- dummy video: 2 frames of 32x32 zeros -> grid (1, merge, merge) -> one merged token --------------------
    def dummy_video(self) -> tuple[torch.Tensor, torch.Tensor]:
        grid = torch.tensor([[1, self.merge, self.merge]], dtype=torch.long)
        return torch.zeros(self.merge * self.merge, self.patch_dim), grid

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        good = [f for f in features if not is_bad(f)]
        bad = Counter(f[MARKER_KEY] for f in features if is_bad(f))
        need_dummy = self.dummy_vision and not any(f.get("pixel_values_videos") is not None
                                                    or f.get(FRAMES_KEY) is not None for f in good)
        batch = self._pack(good, need_dummy) if self.packing else self._pad(good, need_dummy)
        videos = [f["pixel_values_videos"] for f in good if f.get("pixel_values_videos") is not None]
        grids = [f["video_grid_thw"] for f in good if f.get("video_grid_thw") is not None]
        n_vision = int(sum((g.prod(-1) // (self.merge * self.merge)).sum() for g in grids))
        if need_dummy:
            pv, grid = self.dummy_video()
            videos, grids = videos + [pv], grids + [grid]
        batch["pixel_values_videos"] = torch.cat(videos) if videos else None
        batch["video_grid_thw"] = torch.cat(grids) if grids else None
        frames = [f[FRAMES_KEY] for f in good if f.get(FRAMES_KEY) is not None]
        if frames:
            if videos:
                raise ValueError("a batch mixes processed pixel values and deferred frames: one data.process_frames "
                                 "for every source")
            batch[FRAMES_KEY] = frames
        labelled = batch["labels"] != IGNORE_INDEX
        n_labels = int(labelled.sum())
        n_tokens = int(batch["attention_mask"].sum()) if "attention_mask" in batch else \
            sum(len(f["input_ids"]) for f in good)
        batch.update(bad_samples=dict(bad), n_samples=len(features), n_good=len(good), num_label_tokens=n_labels,
                     num_vision_tokens=n_vision, dummy_vision=need_dummy, packed=self.packing,
                     empty=n_labels == 0, sample_index=[int(f.get("index", -1)) for f in good],
                     num_tokens=n_tokens, num_loss_tokens=int(count_label_tokens(batch["labels"])),
                     loss_positions=kept_positions(batch["labels"]))
        return batch

    # ---- right padding ---------------------------------------------------------------------------------------------
    def _pad(self, good, need_dummy: bool) -> dict[str, Any]:
        rows = [(f["input_ids"], f["labels"], f["position_ids"]) for f in good]
        if not rows:  # every sample was bad: one attended pad token, no labels
            rows = [(torch.tensor([self.pad_id]), torch.tensor([IGNORE_INDEX]), torch.zeros(3, 1, dtype=torch.long))]
        lengths = [len(r[0]) for r in rows]
        L = max(lengths) + (1 if need_dummy else 0)
        if self.pad_to_multiple_of:
            L = -(-L // self.pad_to_multiple_of) * self.pad_to_multiple_of
        B = len(rows)
        input_ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        labels = torch.full((B, L), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((B, L), dtype=torch.long)
        positions = torch.zeros((3, B, L), dtype=torch.long)
        for b, (ids, lab, pos) in enumerate(rows):
            n = len(ids)
            input_ids[b, :n], labels[b, :n], attention[b, :n] = ids, lab, 1
            positions[:, b, :n] = pos
            nxt = int(pos.max()) + 1 if n else 0
            positions[:, b, n:] = torch.arange(nxt, nxt + L - n)  # padding: plain text positions after the sample
        if need_dummy:
            input_ids[0, -1] = self.video_token_id  # padding slot: attention 0, label -100
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "position_ids": positions}

    # ---- packing -----------------------------------------------------------------------------------------------------
    def _pack(self, good, need_dummy: bool) -> dict[str, Any]:
        cap = self.max_packed_tokens
        rows: list[list[Mapping[str, Any]]] = [[]]
        used = 0
        for f in good:
            n = len(f["input_ids"])
            if cap and rows[-1] and used + n > cap:
                rows.append([])
                used = 0
            rows[-1].append(f)
            used += n
        built = []
        for r, row in enumerate(rows):
            ids = [f["input_ids"] for f in row]
            lab = [f["labels"] for f in row]
            mrope = [f["position_ids"] for f in row]
            text = [torch.arange(len(f["input_ids"])) for f in row]
            if not row:  # every sample was bad: one pad token, no labels
                ids, lab = [torch.tensor([self.pad_id])], [torch.tensor([IGNORE_INDEX])]
                mrope, text = [torch.zeros(3, 1, dtype=torch.long)], [torch.zeros(1, dtype=torch.long)]
            if need_dummy and r == 0:  # its own one-token sequence
                ids.append(torch.tensor([self.video_token_id]))
                lab.append(torch.tensor([IGNORE_INDEX]))
                mrope.append(torch.zeros(3, 1, dtype=torch.long))
                text.append(torch.zeros(1, dtype=torch.long))
            pos = torch.cat([torch.cat(text)[None], torch.cat(mrope, dim=1)])  # (4, n)
            built.append((torch.cat(ids), torch.cat(lab), pos))
        L = max(len(b[0]) for b in built)
        if self.pad_to_multiple_of:
            L = -(-L // self.pad_to_multiple_of) * self.pad_to_multiple_of
        B = len(built)
        input_ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        labels = torch.full((B, L), IGNORE_INDEX, dtype=torch.long)
        positions = torch.zeros((4, B, L), dtype=torch.long)
        for b, (ids, lab, pos) in enumerate(built):
            n = len(ids)
            input_ids[b, :n], labels[b, :n], positions[:, b, :n] = ids, lab, pos
            positions[:, b, n:] = torch.arange(L - n)  # padding: a separate sequence starting at 0
        return {"input_ids": input_ids, "labels": labels, "position_ids": positions}


def build_collator(data_cfg: Mapping[str, Any] | None, processor) -> StreamCollator:
    from streaming_vlm.data.dataset import data_config

    cfg = data_config(data_cfg)
    return StreamCollator(processor, packing=bool(cfg["packing"]), max_packed_tokens=cfg["max_packed_tokens"])
