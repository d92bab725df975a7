"""Collation: right padding, the ZeRO-3 dummy video (tower always runs, loss unchanged), all-bad batches, and
packing whose logits equal the unpacked ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streaming_vlm.data.collator import StreamCollator, split_batch
from streaming_vlm.data.dataset import build_train_dataset
from tests.fixture_video import FAST, conversation, timed_words, write_jsonl_with_seeks, write_video
from streaming_vlm.data.stream_template import IGNORE_INDEX, Second, StreamTemplate

SMALL = dict(min_pixels=32 * 32, max_pixels=64 * 64, total_pixels=10 ** 9, system_prompt="SYS")


@pytest.fixture(scope="module")
def samples(tmp_path_factory, tiny_processor):
    d = tmp_path_factory.mktemp("col")
    write_video(d / "g.mp4", 12, options=FAST)
    rows = [conversation("g.mp4", 0.0, 12.0, timed_words(0, 6, 0.3) + timed_words(6, 12, 0.7))]
    path = write_jsonl_with_seeks(d / "t_with_seeks.jsonl", rows)
    ds = build_train_dataset(dict(SMALL, train_file=str(path), window=3, stride=3, min_words=1), tiny_processor)
    return [ds[i] for i in (0, 2, 3)]  # different lengths (previous text grows)


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    from transformers import Qwen3VLForConditionalGeneration

    m = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt, attn_implementation="sdpa").eval()
    return m


def _text_only(processor, words="hello there"):
    tpl = StreamTemplate(processor, "SYS")
    enc = tpl.encode_window("prev", [Second(5.0, 6.0, np.zeros((0, 32, 32, 3), np.uint8), [], words)])
    assert enc.pixel_values_videos is None
    return {"input_ids": enc.input_ids, "labels": enc.labels, "position_ids": enc.position_ids,
            "pixel_values_videos": None, "video_grid_thw": None, "index": 0}


def test_right_padding(samples, tiny_processor):
    batch = StreamCollator(tiny_processor)(samples)
    lengths = [len(s["input_ids"]) for s in samples]
    assert len(set(lengths)) == 3
    B, L = batch["input_ids"].shape
    assert (B, L) == (3, max(lengths)) and batch["position_ids"].shape == (3, 3, L)
    pad = tiny_processor.tokenizer.pad_token_id
    for b, s in enumerate(samples):
        n = lengths[b]
        assert torch.equal(batch["input_ids"][b, :n], s["input_ids"])
        assert torch.equal(batch["labels"][b, :n], s["labels"])
        assert torch.equal(batch["position_ids"][:, b, :n], s["position_ids"])
        assert (batch["input_ids"][b, n:] == pad).all() and (batch["labels"][b, n:] == IGNORE_INDEX).all()
        assert batch["attention_mask"][b].tolist() == [1] * n + [0] * (L - n)
    assert torch.equal(batch["pixel_values_videos"], torch.cat([s["pixel_values_videos"] for s in samples]))
    assert torch.equal(batch["video_grid_thw"], torch.cat([s["video_grid_thw"] for s in samples]))
    assert not batch["dummy_vision"] and batch["bad_samples"] == {} and batch["n_samples"] == 3
    assert batch["num_vision_tokens"] == 3 * 3 * 2
    assert batch["num_label_tokens"] == sum(int((s["labels"] != IGNORE_INDEX).sum()) for s in samples)
    inputs, meta = split_batch(batch)
    assert set(inputs) == {"input_ids", "attention_mask", "labels", "position_ids", "pixel_values_videos",
                           "video_grid_thw"} and "bad_samples" in meta


@pytest.mark.parametrize("packing", [False, True])
def test_dummy_video_runs_the_tower_and_changes_nothing(model, tiny_processor, packing):
    features = [_text_only(tiny_processor), _text_only(tiny_processor, "a much longer line of words here")]
    with_dummy = StreamCollator(tiny_processor, packing=packing)(features)
    without = StreamCollator(tiny_processor, packing=packing, dummy_vision=False)(features)
    assert with_dummy["dummy_vision"] and not without["dummy_vision"]
    assert with_dummy["video_grid_thw"].tolist() == [[1, 2, 2]]
    assert with_dummy["pixel_values_videos"].shape == (4, 3 * 2 * 16 * 16)
    assert with_dummy["num_vision_tokens"] == 0 and without["pixel_values_videos"] is None
    vid = tiny_processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert int((with_dummy["input_ids"] == vid).sum()) == 1
    calls = []
    hook = model.model.visual.register_forward_hook(lambda *a: calls.append(1))
    try:
        a = model(**split_batch(with_dummy)[0])
        b = model(**split_batch(without)[0])
    finally:
        hook.remove()
    assert len(calls) == 1  # only the dummy batch ran the tower
    assert torch.allclose(a.loss, b.loss, atol=1e-6)
    # and the gradient it sends into the tower is exactly zero (frozen or not, ZeRO-3 just needs the call)
    model.zero_grad()
    model(**split_batch(with_dummy)[0]).loss.backward()
    grads = [p.grad for p in model.model.visual.parameters() if p.grad is not None]
    assert grads and all(float(g.abs().max()) == 0.0 for g in grads)
    assert any(float(p.grad.abs().max()) > 0 for p in model.model.language_model.parameters())
    model.zero_grad()


@pytest.mark.parametrize("packing", [False, True])
def test_deferred_frames_travel_to_the_trainer_instead_of_pixels(tmp_path, samples, tiny_processor, packing):
    """`data.process_frames=trainer`: the batch carries each sample's uint8 frames (no pixel values, no dummy video);
    a batch cannot mix the two forms."""
    from streaming_vlm.data.stream_template import process_frames

    write_video(tmp_path / "g.mp4", 12, options=FAST)
    rows = [conversation("g.mp4", 0.0, 12.0, timed_words(0, 6, 0.3) + timed_words(6, 12, 0.7))]
    path = write_jsonl_with_seeks(tmp_path / "t_with_seeks.jsonl", rows)
    ds = build_train_dataset(dict(SMALL, train_file=str(path), window=3, stride=3, min_words=1,
                                  process_frames="trainer"), tiny_processor)
    deferred = [ds[i] for i in (0, 2, 3)]
    collate = StreamCollator(tiny_processor, packing=packing)
    now, later = collate(samples), collate(deferred)
    assert later["pixel_values_videos"] is None and not later["dummy_vision"] and len(later["video_frames"]) == 3
    assert torch.equal(later["video_grid_thw"], now["video_grid_thw"])
    assert torch.equal(later["input_ids"], now["input_ids"]) and later["num_vision_tokens"] == now["num_vision_tokens"]
    assert torch.equal(process_frames(tiny_processor, later["video_frames"]), now["pixel_values_videos"])
    assert "video_frames" in split_batch(later)[0]
    with pytest.raises(ValueError, match="mixes processed pixel values and deferred frames"):
        collate([samples[0], deferred[1]])


@pytest.mark.parametrize("packing", [False, True])
def test_all_bad_batch_is_valid_and_empty(model, tiny_processor, packing):
    batch = StreamCollator(tiny_processor, packing=packing)([{"bad_sample": "corrupt_video", "index": 3}])
    assert batch["empty"] and batch["num_label_tokens"] == 0 and batch["n_good"] == 0 and batch["dummy_vision"]
    assert batch["bad_samples"] == {"corrupt_video": 1}
    with torch.no_grad():
        out = model(**split_batch(batch)[0])
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_outputs_equal_unpacked(samples, tiny_ckpt, tiny_processor, attn):
    from transformers import Qwen3VLForConditionalGeneration

    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt, attn_implementation=attn).eval()
    padded = StreamCollator(tiny_processor)(samples)
    packed = StreamCollator(tiny_processor, packing=True)(samples)
    assert packed["input_ids"].shape == (1, sum(len(s["input_ids"]) for s in samples))
    assert packed["position_ids"].shape[0] == 4 and "attention_mask" not in packed
    assert split_batch(packed)[0]["use_cache"] is False
    def hidden(batch):  # the last hidden states (logits are a linear map of them; skips the 152K-vocab head)
        inputs = split_batch(batch)[0]
        inputs.pop("labels")
        with torch.no_grad():
            return model.model(**inputs).last_hidden_state

    ref, got = hidden(padded), hidden(packed)
    offset = 0
    for b, s in enumerate(samples):
        n = len(s["input_ids"])
        assert torch.allclose(got[0, offset:offset + n], ref[b, :n], atol=2e-5), b
        offset += n
    # leaky packing would differ: the same row read as ONE sequence (plain 3-row positions) gives other states
    leaky = dict(packed, position_ids=packed["position_ids"][1:], packed=False)
    n0 = len(samples[0]["input_ids"])
    assert not torch.allclose(hidden(leaky)[0, n0:2 * n0], got[0, n0:2 * n0], atol=1e-3)


def test_packing_into_rows_of_a_token_budget(samples, tiny_processor):
    lengths = [len(s["input_ids"]) for s in samples]
    cap = lengths[0] + lengths[1]
    batch = StreamCollator(tiny_processor, packing=True, max_packed_tokens=cap)(samples)
    assert batch["input_ids"].shape == (2, cap)
    pos0 = batch["position_ids"][0]
    # row 0: sample 0 then sample 1, each restarting at 0; row 1: sample 2 then padding as its own sequence
    assert pos0[0].tolist() == list(range(lengths[0])) + list(range(lengths[1]))
    assert pos0[1].tolist() == list(range(lengths[2])) + list(range(cap - lengths[2]))
    assert (batch["labels"][1, lengths[2]:] == IGNORE_INDEX).all()
