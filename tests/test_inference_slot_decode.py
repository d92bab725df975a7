"""Decoding on the fixed slot buffers (the fast path's CUDA-graph decoder, run eagerly here) computes what the
reference path (one eager transformers forward per token on the streaming cache) computes: same logits at every decoded token, same tokens, same cache afterwards, across evictions
(the cache shrinks, so stale keys sit in slots past its end and must stay masked). Its on-device sampler
(repetition penalty, min-new-tokens ban, Gumbel-max) picks what the host sampler picks from the same scores."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen3VLForConditionalGeneration

from streaming_vlm.data.video import VideoReader
from streaming_vlm.errors import UserError
from streaming_vlm.inference.engine import Plan, StreamingEngine
from tests.fixture_video import write_video
from tests.score_trace import TracingEngine
from tests.cache_check import check_cache

PLANS = {"dynamic": Plan(fast=False), "slots": Plan(fast=True), "compiled": Plan(fast=True, compiled=True),
         "cuda_graph": Plan(fast=True, cuda_graph=True)}


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("vid") / "game.mp4", seconds=6, fps=24, width=160, height=96)


def _frozen(tiny_ckpt, attn="sdpa"):
    """A model nothing trains, as load_model returns it (the fast path's condition)."""
    return Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt, attn_implementation=attn).eval() \
        .requires_grad_(False)


def _run(model, processor, video, mode, **extra):
    cfg = {"window_size": 2, "text_sink": 8, "text_sliding_window": 12, "temperature": 0, "max_new_tokens": 6,
           "min_new_tokens": 4, **extra}
    engine = TracingEngine(model, processor, cfg, plan=PLANS[mode])  # + the scores every token was sampled from
    engine.start(previous_text="Earlier: a quiet first half, nil nil.")
    outs = [engine.step(s) for s in VideoReader(video, fps=2.0).seconds(0, 6)]
    return engine, outs


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_slot_decoding_equals_dynamic_decoding(tiny_ckpt, tiny_processor, video, attn):
    model = _frozen(tiny_ckpt, attn)
    dyn, dyn_out = _run(model, tiny_processor, video, "dynamic")
    slot, slot_out = _run(model, tiny_processor, video, "slots")
    assert dyn.slots is None and slot.slots is not None and not slot.slots.use_graph
    assert slot.cache.tokens_evicted > 0, "the test must cover evictions"
    assert [o["tokens"] for o in slot_out] == [o["tokens"] for o in dyn_out]
    assert sum(o["tokens"] for o in slot_out) >= 6 * 4
    assert len(slot.score_trace) == len(dyn.score_trace)
    diff = max((a - b).abs().max().item() for a, b in zip(slot.score_trace, dyn.score_trace))
    assert diff < 1e-4, f"slot vs dynamic decoding: max |Δlogit| = {diff:.2e}"
    assert [o["text"] for o in slot_out] == [o["text"] for o in dyn_out]
    assert slot.cache.ids() == dyn.cache.ids()
    check_cache(slot.cache)
    for a, b in zip(slot.cache.layers, dyn.cache.layers):
        torch.testing.assert_close(a.keys, b.keys, atol=1e-5, rtol=0)
        torch.testing.assert_close(a.values, b.values, atol=1e-5, rtol=0)


def test_slot_masking_is_what_makes_it_exact(tiny_ckpt, tiny_processor, video):
    """With every slot opened (stale keys visible) the logits move: the mask is doing the work above."""
    model = _frozen(tiny_ckpt)
    engine, _ = _run(model, tiny_processor, video, "slots")
    slots = engine.slots
    pos = engine.cache.next_position
    logits = torch.randn(slots.scores.shape[0], generator=torch.Generator().manual_seed(0))

    def one_step(open_all=False):  # greedy: feed the token these logits pick, return the next scores
        slots.load(engine.cache)
        if open_all:
            slots.mask.zero_()  # open every slot
        slots.generate(logits, pos, 2, 2)
        return slots.scores.clone()

    n = engine.cache.get_seq_length()
    assert 0 < n < slots.capacity
    good = one_step()
    with torch.no_grad():
        for keys, values in slots.banks[slots.active].layers:  # stale content past the cache's end (an eviction's)
            keys[:, :, n:].normal_()
            values[:, :, n:].normal_()
    torch.testing.assert_close(one_step(), good, atol=1e-5, rtol=0)  # masked: stale slots change nothing
    assert (one_step(open_all=True) - good).abs().max().item() > 1e-3


def test_cuda_graph_mode_needs_cuda(tiny_ckpt, tiny_processor, video):
    model = _frozen(tiny_ckpt)
    with pytest.raises(UserError, match="CUDA"):
        _run(model, tiny_processor, video, "cuda_graph")


def _pick(dec, logits, min_new=0) -> int:
    """One token sampled from `logits` through the public API: a one-token reply is sampled, not fed (<|im_end|>
    ends a reply, so it comes back as an empty one)."""
    generated, fed = dec.generate(logits, 0, 1, min_new)
    assert fed == 0 and len(generated) <= 1
    return generated[0] if generated else dec.im_end_id


def _sampler(model, temperature, penalty=1.0, seed=0, compile=False, max_steps=4):
    from streaming_vlm.inference.cache import StreamingCache
    from streaming_vlm.inference.graph_decode import SlotDecoder

    gen = torch.Generator().manual_seed(seed)
    text = model.config.text_config
    banks = StreamingCache(model.model.language_model.rotary_emb.inv_freq).make_banks(
        text.num_hidden_layers, text.num_key_value_heads, text.head_dim, 8, torch.float32, torch.device("cpu"))
    return SlotDecoder(model, banks, use_graph=False, im_end_id=151645, max_steps=max_steps, temperature=temperature,
                       repetition_penalty=penalty, generator=gen, compile=compile)


def test_on_device_sampling_follows_softmax_at_temperature(tiny_ckpt):
    """Gumbel-max over the decoder's noise draws tokens with the frequencies of softmax(scores / T)."""
    model = _frozen(tiny_ckpt)
    dec = _sampler(model, temperature=0.7)
    logits = torch.tensor([0.0, 1.0, 2.0])
    ids = torch.tensor([11, 22, 33])
    scores = torch.full(dec.scores.shape, float("-inf"))
    scores[ids] = logits
    n = 3000
    counts = torch.zeros(3)
    for _ in range(n):
        tok = _pick(dec, scores)
        assert tok in ids.tolist()
        counts[ids.tolist().index(tok)] += 1
    expected = torch.softmax(logits / 0.7, -1)
    assert (counts / n - expected).abs().max() < 0.03, (counts / n, expected)


def test_on_device_penalty_and_ban_match_transformers(tiny_ckpt):
    """Greedy picks under the repetition penalty and the <|im_end|> ban equal transformers' processors'."""
    from transformers import RepetitionPenaltyLogitsProcessor

    model = _frozen(tiny_ckpt)
    dec = _sampler(model, temperature=0.0, penalty=1.3)
    proc = RepetitionPenaltyLogitsProcessor(1.3)
    g = torch.Generator().manual_seed(1)
    changed = 0
    for trial in range(20):
        scores = torch.randn(dec.scores.shape[0], generator=g)
        top = scores.topk(3).indices
        context = torch.cat([top[:2], torch.randint(0, scores.shape[0], (50,), generator=g)])
        scores[151645] = scores.max() + 0.01 if trial % 2 else scores[151645]  # <|im_end|> on top half the time
        dec.seen.zero_()  # the tokens the penalty applies to (load() marks the cache's ids)
        dec.seen[context] = True
        ref = proc(context[None], scores[None].clone())[0]
        if trial % 4 == 1:
            ref[151645] = float("-inf")
        assert _pick(dec, scores, min_new=1 if trial % 4 == 1 else 0) == int(ref.argmax())
        changed += int(ref.argmax()) != int(scores.argmax())
    assert changed >= 5, "the penalty/ban must change the pick in some trials for this test to mean anything"


def test_slot_sampling_is_reproducible_with_a_seed(tiny_ckpt, tiny_processor, video):
    model = _frozen(tiny_ckpt)
    texts = []
    for seed in (3, 3, 4):
        cfg = {"window_size": 2, "text_sink": 8, "text_sliding_window": 12, "temperature": 1.5, "max_new_tokens": 6,
               "seed": seed}
        engine = StreamingEngine(model, tiny_processor, cfg, plan=PLANS["slots"])
        engine.start()
        texts.append([engine.step(s)["text"] for s in VideoReader(video, fps=2.0).seconds(0, 4)])
    assert texts[0] == texts[1]
    assert texts[0] != texts[2]


def test_compiled_slot_step_decodes_as_the_eager_step(tiny_ckpt, tiny_processor, video):
    """torch.compile of the step and the prefill (what the CUDA plan runs) changes nothing decoded."""
    model = _frozen(tiny_ckpt)
    eager, eager_out = _run(model, tiny_processor, video, "slots")
    comp, comp_out = _run(model, tiny_processor, video, "compiled")
    assert comp.slots.compiled and not eager.slots.compiled
    assert [o["tokens"] for o in comp_out] == [o["tokens"] for o in eager_out]
    assert len(comp.score_trace) == len(eager.score_trace) >= 6 * 4
    diff = max((a - b).abs().max().item() for a, b in zip(comp.score_trace, eager.score_trace))
    assert diff < 1e-4, f"compiled vs eager slot step: max |Δlogit| = {diff:.2e}"
    assert comp.cache.ids() == eager.cache.ids()


def test_decoders_share_one_compiled_step(tiny_ckpt, tiny_processor, video):
    """A new engine (chunked streams make one per chunk) reuses the compiled step: no new graph is traced (any
    compilation in the second stream raises under the `fail_on_recompile` stance)."""
    model = _frozen(tiny_ckpt)
    first, _ = _run(model, tiny_processor, video, "compiled")
    with torch.compiler.set_stance("fail_on_recompile"):
        second, _ = _run(model, tiny_processor, video, "compiled")
    assert second.slots is not first.slots and second.slots.compiled


def bank_holding(slots, cache) -> int | None:
    """The decoder bank whose buffers every layer of `cache` is a view of (same storage), if any."""
    for b, bank in enumerate(slots.banks):
        if len(bank.layers) == len(cache.layers) and all(
                c.keys.untyped_storage().data_ptr() == k.untyped_storage().data_ptr()
                and c.values.untyped_storage().data_ptr() == v.untyped_storage().data_ptr()
                for c, (k, v) in zip(cache.layers, bank.layers)):
            return b
    return None


def test_replies_decode_in_place_on_alternating_banks(tiny_ckpt, tiny_processor, video):
    """The decoder steps over the cache's two banks: each eviction compacts the cache into the other one, and
    each reply decodes on the bank that holds it (no copy of the cache before it, its tokens taken in place
    after); the next stream's cache takes the same banks over."""
    model = _frozen(tiny_ckpt)
    engine = StreamingEngine(model, tiny_processor, {"window_size": 2, "text_sink": 8, "text_sliding_window": 12,
                                                     "temperature": 0, "max_new_tokens": 6, "min_new_tokens": 4},
                             plan=PLANS["slots"])
    engine.start(previous_text="Earlier: a quiet first half, nil nil.")
    used = []
    for second in VideoReader(video, fps=2.0).seconds(0, 6):
        engine.step(second)
        slots = engine.slots
        used.append((slots.active, bank_holding(slots, engine.cache)))
    assert engine.cache.tokens_evicted > 0
    assert all(holding == active for active, holding in used), used
    assert {active for active, _ in used} == {0, 1}, "evictions alternate the banks"
    check_cache(engine.cache)
    banks, slots = engine.cache.banks, engine.slots
    engine.start()
    assert engine.cache.banks is banks and engine.slots is slots
    engine.step(VideoReader(video, fps=2.0).seconds(0, 1)[0])
    assert bank_holding(slots, engine.cache) is not None


def test_one_compiled_step_serves_both_banks(tiny_ckpt):
    """The bank is the compiled step's argument: a step on the other bank traces nothing new (a recompilation would
    compile the step again, mid-stream; under the `fail_on_recompile` stance it raises)."""
    dec = _sampler(_frozen(tiny_ckpt), temperature=0.0, compile=True)
    logits = torch.randn(dec.scores.shape[0], generator=torch.Generator().manual_seed(0))
    dec.active = 0
    first, _ = dec.generate(logits, 0, 3, 3)  # two fed steps on bank 0: compiles the step
    dec.active = 1
    dec.mask.fill_(dec.neg)  # every slot closed again, as load() leaves a bank holding no cache
    with torch.compiler.set_stance("fail_on_recompile"):
        second, _ = dec.generate(logits, 0, 3, 3)  # the same steps on bank 1
    assert second == first and len(first) == 3
    k0, k1 = (bank.layers[0][0] for bank in dec.banks)
    # both banks written with the same steps (to rounding: inductor's CPU kernels may vectorise two buffers'
    # reductions differently, so the keys need not be bit-identical; the tokens above are)
    torch.testing.assert_close(k1[..., :2, :], k0[..., :2, :], rtol=1e-5, atol=1e-5)
    assert k1[..., :2, :].abs().sum() > 0


class _SDPACalls(torch.overrides.TorchFunctionMode):
    """Records the arguments of every scaled_dot_product_attention call made under it."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention:
            self.calls.append((args[0].shape, args[1].shape, kwargs.get("enable_gqa", False)))
        return func(*args, **kwargs)


def test_slot_step_attends_with_grouped_query_sdpa(tiny_ckpt):
    """What a decode step computes (and the compiler traces): one grouped-query SDPA per layer over the unrepeated
    slot K/V of all `capacity` slots (not transformers' sdpa, which repeats K/V per query head)."""
    model = _frozen(tiny_ckpt)
    dec = _sampler(model, temperature=0.0)
    text = model.config.text_config
    logits = torch.randn(dec.scores.shape[0], generator=torch.Generator().manual_seed(0))
    with _SDPACalls() as sdpa:
        dec.generate(logits, 0, 2, 2)  # one fed step
    assert len(sdpa.calls) == text.num_hidden_layers, sdpa.calls
    for q, k, gqa in sdpa.calls:
        assert gqa and q[1] == text.num_attention_heads and q[2] == 1
        assert k[1] == text.num_key_value_heads and k[2] == dec.capacity + 1  # unrepeated keys, every slot


def test_slot_decoder_feeds_all_but_the_reply_tail(tiny_ckpt, tiny_processor, video):
    """max_new_tokens reached: max_new - 1 decode steps a reply; the last token and the closing ones are left to
    the next second's prefill (the cache's unwritten tail)."""
    model = _frozen(tiny_ckpt)
    engine = StreamingEngine(model, tiny_processor, {"window_size": 2, "temperature": 0, "max_new_tokens": 6,
                                                     "min_new_tokens": 6}, plan=PLANS["slots"])
    engine.start()
    steps = []  # a decode step embeds the one token it feeds; a prefill embeds a whole piece
    hook = model.model.language_model.embed_tokens.register_forward_hook(
        lambda module, args, out: steps.append(1) if args[0].numel() == 1 else None)
    try:
        outs = [engine.step(s) for s in VideoReader(video, fps=2.0).seconds(0, 3)]
    finally:
        hook.remove()
    assert [o["tokens"] for o in outs] == [6 + 2] * 3
    assert len(steps) == 3 * 5
    assert len(engine.cache.unwritten) == 3
    check_cache(engine.cache)


def test_fused_decode_step_shares_the_weights_and_decodes_the_same(tiny_ckpt, tiny_processor, video):
    """For a model nothing trains, the slot step reads q|k|v and gate|up as one matrix each, whose row blocks ARE
    the model's weights (no copy): the model's own forward is unchanged, and decoding matches the dynamic path."""
    model = _frozen(tiny_ckpt)
    probe = torch.tensor([[151644, 872, 198, 9707, 1879, 13]])
    with torch.no_grad():
        before = model(input_ids=probe).logits
    storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    dyn, dyn_out = _run(model, tiny_processor, video, "dynamic")
    slot, slot_out = _run(model, tiny_processor, video, "slots")
    step = slot.slots.text_step
    assert step is not None and step is slot.text_step and dyn.text_step is None  # one per model: fused once
    lm = model.model.language_model
    attn, mlp = lm.layers[0].self_attn, lm.layers[0].mlp
    (_, qkv, _, _, _), (_, _, _, gate_up, _) = step.weights[0]
    shared = qkv.untyped_storage().data_ptr()
    assert {attn.q_proj.weight.untyped_storage().data_ptr(), attn.k_proj.weight.untyped_storage().data_ptr(),
            attn.v_proj.weight.untyped_storage().data_ptr()} == {shared}
    assert mlp.up_proj.weight.untyped_storage().data_ptr() == gate_up.untyped_storage().data_ptr()
    n_layers = len(lm.layers)
    after_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert len(after_storages) == len(storages) - 3 * n_layers  # 5 weights a layer now live in 2 matrices
    with torch.no_grad():
        after = model(input_ids=probe).logits
    assert torch.equal(after, before)
    assert [o["tokens"] for o in slot_out] == [o["tokens"] for o in dyn_out]
    diff = max((a - b).abs().max().item() for a, b in zip(slot.score_trace, dyn.score_trace))
    assert diff < 1e-4, f"fused slot vs dynamic decoding: max |Δlogit| = {diff:.2e}"


def test_a_trainable_model_keeps_its_weights(tiny_ckpt, tiny_processor, video):
    """With parameters requiring grad (the training eval callback's model), nothing is re-pointed: the engine
    chooses the reference path, and asking it for the fast path is one clear error."""
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_ckpt).eval()
    ptrs = [p.data_ptr() for p in model.parameters()]
    engine = StreamingEngine(model, tiny_processor, {"window_size": 2, "max_new_tokens": 3, "progress": False})
    engine.start()
    engine.step(VideoReader(video, fps=2.0).seconds(0, 1)[0])
    assert engine.plan == Plan(fast=False) and engine.slots is None and engine.text_step is None
    assert [p.data_ptr() for p in model.parameters()] == ptrs
    with pytest.raises(UserError, match="fast path"):
        StreamingEngine(model, tiny_processor, {"window_size": 2}, plan=PLANS["slots"]).start()


def test_the_engine_picks_the_fast_path_and_logs_it_once(tiny_ckpt, tiny_processor, video, capsys):
    """A model nothing trains gets the fast path (on CPU: eager slot decoding); `eager` keeps it uncompiled; the
    choice is one line on stderr."""
    model = _frozen(tiny_ckpt)
    engine = StreamingEngine(model, tiny_processor, {"window_size": 2, "max_new_tokens": 3})
    engine.start()
    list(engine.stream(VideoReader(video, fps=2.0).seconds(0, 2)))
    engine.start()  # a second stream: no second choice
    assert engine.plan == Plan(fast=True, compiled=False, cuda_graph=False, preprocess_device=None)
    assert engine.slots is not None and not engine.slots.use_graph
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("engine:")]
    assert lines == ["engine: " + engine.plan.describe()] and "fast path" in lines[0]
    eager = StreamingEngine(model, tiny_processor, {"window_size": 2, "eager": True, "progress": False})
    eager.start()
    assert eager.plan.fast and not eager.plan.compiled and not eager.plan.cuda_graph


@pytest.mark.parametrize("mode", ["slots", "dynamic"])
def test_lookahead_prepares_the_next_second_and_changes_nothing(tiny_ckpt, tiny_processor, video, mode):
    """engine.stream with lookahead reads and prepares (preprocess + vision tower) each next second while the
    current one decodes; every logit, token and cached K/V is what stepping second by second gives."""
    model = _frozen(tiny_ckpt)
    runs = {}
    for lookahead in (False, True):
        cfg = {"window_size": 2, "text_sink": 8, "text_sliding_window": 12, "temperature": 0,
               "max_new_tokens": 6, "min_new_tokens": 4}
        engine = TracingEngine(model, tiny_processor, cfg, plan=PLANS[mode])
        engine.start(previous_text="Earlier: a quiet first half, nil nil.")
        outs = list(engine.stream(VideoReader(video, fps=2.0).seconds(0, 6), lookahead=lookahead))
        runs[lookahead] = (engine, outs)
    (plain, plain_out), (ahead, ahead_out) = runs[False], runs[True]
    assert plain.steps_prepared_ahead == 0
    assert ahead.steps_prepared_ahead == len(ahead_out) - 1 == 5  # all but the first second
    if ahead.vision_ahead:
        assert ahead.timings.total["vision"] > 0
    assert ahead.cache.tokens_evicted > 0
    assert [o["text"] for o in ahead_out] == [o["text"] for o in plain_out]
    assert [o["tokens"] for o in ahead_out] == [o["tokens"] for o in plain_out]
    assert len(ahead.score_trace) == len(plain.score_trace)
    for a, b in zip(ahead.score_trace, plain.score_trace):
        assert torch.equal(a, b)
    assert ahead.cache.ids() == plain.cache.ids()
    for a, b in zip(ahead.cache.layers, plain.cache.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def test_two_stage_argmax_is_argmax():
    from streaming_vlm.inference.graph_decode import first_argmax

    g = torch.Generator().manual_seed(0)
    for n in (151936, 1000, 128 * 7):
        scores = torch.randn(n, generator=g)
        assert first_argmax(scores).item() == scores.argmax().item()
        scores[5] = scores[n - 3] = scores.max() + 1  # a tie: the first index wins, as with argmax
        assert first_argmax(scores).tolist() == [5]
