"""The Qwen3-VL text stack's forward for the streaming engine, over the model's own weights: a piece appended to the
streaming cache (a second's user turn with its vision and DeepStack features, a reply's tail, the prefix) or one
decode token over the slot buffers (graph_decode.py).

Why not transformers' forward: for the engine's pieces it is host-bound: it launches every small kernel of every
layer from Python, and its placeholder checks and boolean-mask scatters sync the host with the device. Here the
layer body is two pure functions of tensors, `attention_inputs` (norm, q|k|v, q/k norms, mRoPE) and `layer_output` (o projection, residual, norm,
gate|up, SiLU, down, residual), with the cache update and the attention call between them:

- q|k|v and gate|up are one matrix-vector/matrix product each. The fused matrices ARE the model's weights: the
  q/k/v and gate/up Parameters are re-pointed (`.data`) at row slices of one new matrix per layer, so no memory is
  added and the model's own forward reads the same values. Only for a model nothing trains (`can_fuse`): an
  optimizer's flat buffers (DeepSpeed, FSDP) would no longer reach these weights. `load_model` returns such a
  model; a trainable one (the training eval callback's) keeps transformers' forward.
- The functions take the weights as arguments, so a decoder layer over a second's piece is one function
  (`layer_forward`) that torch.compile turns into one generated call for any layer, piece or cache length
  (`TextStep.compile`; the engine's compiled plan).
- The vision features go in with index ops at placeholder indices computed on the host, and the DeepStack features
  are added after the first layers the same way: no host sync.

The rotary is the model's own `rotary_emb` over the piece's 3-row (t, h, w) positions, so vision tokens get their
3-D positions as in transformers' forward. One instance per model (`text_step_for`), shared by the engine's pieces
and the slot decoder, so the weights are fused once.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from transformers.models.qwen3_vl import modeling_qwen3_vl


def supports(language_model) -> bool:
    return (isinstance(language_model, modeling_qwen3_vl.Qwen3VLTextModel)
            and getattr(language_model.config, "hidden_act", "silu") == "silu")


def can_fuse(language_model) -> bool:
    """Fusing re-points weights: only for plain Linear projections (no LoRA wrappers) of a model nothing trains."""
    if any(p.requires_grad for p in language_model.parameters()):
        return False
    return all(type(lin) is torch.nn.Linear for layer in language_model.layers
               for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                           layer.self_attn.o_proj, layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj))


# ---- the layer body, as pure functions of tensors ------------------------------------------------------------
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Qwen3VLTextRMSNorm.forward, as a function (tests/test_text_step.py checks it bit for bit)."""
    dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def attention_inputs(h, norm, qkv, qkv_bias, q_norm, k_norm, cos, sin, eps: float, heads: int, kv_heads: int):
    """(B, L, D) residual stream -> rotated q (B, heads, L, d), k and v (B, kv_heads, L, d)."""
    b, n, _ = h.shape
    d = q_norm.shape[0]
    q, k, v = F.linear(rms_norm(h, norm, eps), qkv, qkv_bias).split([heads * d, kv_heads * d, kv_heads * d], dim=-1)
    q = rms_norm(q.view(b, n, heads, d), q_norm, eps).transpose(1, 2)
    k = rms_norm(k.view(b, n, kv_heads, d), k_norm, eps).transpose(1, 2)
    v = v.view(b, n, kv_heads, d).transpose(1, 2)
    q, k = modeling_qwen3_vl.apply_rotary_pos_emb(q, k, cos, sin)
    return q, k, v


def layer_output(h, attn_out, o_proj, o_bias, norm, gate_up, down, eps: float):
    """Residual stream after the attention output (B, L, heads·d) and the MLP."""
    h = h + F.linear(attn_out, o_proj, o_bias)
    gate, up = F.linear(rms_norm(h, norm, eps), gate_up).chunk(2, dim=-1)
    return h + F.linear(F.silu(gate) * up, down)


def add_deepstack(h, index, features):
    """DeepStack: a layer's vision features added to the residual stream at the vision tokens (`index`)."""
    return h.index_copy(1, index, h.index_select(1, index) + features[None].to(h.dtype))


def chunk_attention(module, query, key, value, attention_mask=None, scaling: float | None = None, **kwargs):
    """`causal_from_bottom_right` in the attention-function signature `TextStep.__call__` takes (transformers'):
    a piece appended to the cache sees every cached token and itself causally, so no mask is built."""
    if attention_mask is not None:
        raise ValueError("chunk_attention builds its own causal bias; got an explicit attention mask")
    return causal_from_bottom_right(query, key, value, scaling), None


def causal_from_bottom_right(q, k, v, scaling: float):
    """(1, heads, L, d) queries of the newest L of the S cached keys/values (1, kv_heads, S, d): each sees every
    key up to its own. On CUDA in half precision the flash kernel, whose `is_causal` is bottom-right when L < S
    (what SDPA's `causal_lower_right` bias dispatches to, called directly so that torch.compile traces it);
    elsewhere SDPA with the boolean mask. Returns (1, L, heads·d)."""
    n_q, n_k = q.shape[-2], k.shape[-2]
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] % 8 == 0 and q.shape[-1] <= 256:
        out = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, is_causal=True,
                                                                 return_debug_mask=False, scale=scaling)[0]
    else:
        mask = (torch.arange(n_k, device=q.device)[None, :]
                <= torch.arange(n_q, device=q.device)[:, None] + (n_k - n_q))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).reshape(1, n_q, -1)


def layer_forward(h, cos, sin, w_in, w_out, kbuf, vbuf, n: int, eps: float, heads: int, kv_heads: int,
                  scaling: float):
    """One decoder layer over a piece with vision, as one function for torch.compile: it writes the layer's K/V
    into its cache buffers (`kbuf`/`vbuf`, room for the piece from token `n` on) and attends over [0, n + L). The
    weights are arguments, so one compiled graph serves every layer."""
    L = h.shape[1]
    q, k, v = attention_inputs(h, *w_in, cos, sin, eps, heads, kv_heads)
    kbuf[:, :, n:n + L].copy_(k)
    vbuf[:, :, n:n + L].copy_(v)
    out = causal_from_bottom_right(q, kbuf[:, :, :n + L], vbuf[:, :, :n + L], scaling)
    return layer_output(h, out, *w_out, eps)


def _alias_rows(linears) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One (sum of rows, in) matrix whose row blocks become the given linears' weights (and biases)."""
    weight = torch.cat([lin.weight.detach() for lin in linears])
    biases = [lin.bias for lin in linears]
    bias = torch.cat([b.detach() for b in biases]) if all(b is not None for b in biases) else None
    start = 0
    for lin in linears:
        rows = lin.weight.shape[0]
        lin.weight.data = weight[start:start + rows]
        if bias is not None:
            lin.bias.data = bias[start:start + rows]
        start += rows
    return weight, bias


class TextStep:
    def __init__(self, language_model):
        if not supports(language_model):
            raise TypeError(f"TextStep supports Qwen3VLTextModel (SiLU), not {type(language_model).__name__}")
        if not can_fuse(language_model):
            raise ValueError("TextStep re-points the model's weights: only for a model nothing trains")
        self.lm = language_model
        cfg = language_model.config
        self.eps = float(cfg.rms_norm_eps)
        self.heads, self.kv_heads = int(cfg.num_attention_heads), int(cfg.num_key_value_heads)
        self.weights = []  # per layer: the arguments of attention_inputs and layer_output
        for layer in language_model.layers:
            attn, mlp = layer.self_attn, layer.mlp  # Qwen3-VL's MLP projections have no bias
            qkv, qkv_bias = _alias_rows([attn.q_proj, attn.k_proj, attn.v_proj])
            gate_up, _ = _alias_rows([mlp.gate_proj, mlp.up_proj])
            self.weights.append(((layer.input_layernorm.weight, qkv, qkv_bias, attn.q_norm.weight,
                                  attn.k_norm.weight),
                                 (attn.o_proj.weight, attn.o_proj.bias, layer.post_attention_layernorm.weight,
                                  gate_up, mlp.down_proj.weight)))
        self.scaling = float(language_model.layers[0].self_attn.scaling)
        self._layer = None

    def compile(self) -> None:
        """torch.compile one decoder layer for pieces with vision (`layer_forward`), every dimension dynamic: one
        compilation serves every layer and any piece, vision or cache length. Compiling the layer rather than
        the whole stack keeps Dynamo's trace (which no on-disk cache skips at a warm start) to one layer's ops.
        `warm_up` compiles it now."""
        if self._layer is None:
            self._layer = torch.compile(layer_forward, dynamic=True)

    WARM_UP_TOKENS = 7

    @torch.inference_mode()
    def warm_up(self, keys: list[torch.Tensor], values: list[torch.Tensor], n: int) -> None:
        """Run the compiled stack on a random piece of `WARM_UP_TOKENS` with vision, written in the buffers' room
        after their `n` tokens (and left there, unused), so that no compilation falls in a stream second."""
        qkv = self.weights[0][0][1]
        vision = self.WARM_UP_TOKENS - 3
        h = torch.randn(1, self.WARM_UP_TOKENS, qkv.shape[1], device=qkv.device, dtype=qkv.dtype)
        index = torch.arange(1, vision + 1, device=qkv.device)
        deepstack = [torch.randn(vision, qkv.shape[1], device=qkv.device, dtype=qkv.dtype) for _ in range(3)]
        self.stack(h, torch.arange(h.shape[1], device=qkv.device).expand(3, 1, -1), keys, values, n,
                   (index, deepstack))

    def __call__(self, hidden: torch.Tensor, positions: torch.Tensor, buffers, attention, mask=None,
                 visual: tuple[torch.Tensor, list[torch.Tensor]] | None = None) -> torch.Tensor:
        """hidden (1, L, D): the piece's input embeddings; positions (3, 1, L); `buffers`: the layers' K/V buffers,
        whose `update(k, v, layer)` writes the piece's K/V and returns what it attends over (cache.PieceBuffers for a
        piece appended to the cache, graph_decode.SlotBank for a decode step); `attention(module, q, k, v, mask,
        scaling=…)` in transformers' signature; `visual`: (the vision tokens' indices in the piece, DeepStack
        features per layer (n, D)), added after the first layers as transformers does. Returns the final-norm
        hidden states (1, L, D)."""
        cos, sin = self.lm.rotary_emb(hidden, positions)
        h = hidden
        for i, (layer, (w_in, w_out)) in enumerate(zip(self.lm.layers, self.weights)):
            q, k, v = attention_inputs(h, *w_in, cos, sin, self.eps, self.heads, self.kv_heads)
            k, v = buffers.update(k, v, i)
            out, _ = attention(layer.self_attn, q, k, v, mask, scaling=layer.self_attn.scaling)
            h = layer_output(h, out.reshape(*h.shape[:2], -1), *w_out, self.eps)
            if visual is not None and i < len(visual[1]):
                h = add_deepstack(h, visual[0], visual[1][i])
        return rms_norm(h, self.lm.norm.weight, self.lm.norm.variance_epsilon)


    def stack(self, hidden: torch.Tensor, positions: torch.Tensor, keys: list[torch.Tensor],
              values: list[torch.Tensor], n: int, visual: tuple[torch.Tensor, list[torch.Tensor]]) -> torch.Tensor:
        """The stack over a piece with vision through the compiled layer (`layer_forward`, after `compile()`):
        each layer's K/V written straight into its buffers (`keys`/`values`, the cache's, holding `n` tokens and
        room for the piece) and attending bottom-right causally; the DeepStack features added after the first
        layers. Returns the final-norm hidden states."""
        if self._layer is None:
            raise RuntimeError("TextStep.stack before compile()")
        cos, sin = self.lm.rotary_emb(hidden, positions)
        index, deepstack = visual
        h = hidden
        for i, ((w_in, w_out), kbuf, vbuf) in enumerate(zip(self.weights, keys, values)):
            h = self._layer(h, cos, sin, w_in, w_out, kbuf, vbuf, n, self.eps, self.heads, self.kv_heads,
                            self.scaling)
            if i < len(deepstack):
                h = add_deepstack(h, index, deepstack[i])
        return rms_norm(h, self.lm.norm.weight, self.lm.norm.variance_epsilon)


_STEPS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def text_step_for(language_model) -> TextStep | None:
    """The model's TextStep (made, and its weights fused, on first use), or None where it does not apply: another
    text stack, or a model something trains."""
    if not supports(language_model) or not can_fuse(language_model):
        return None
    step = _STEPS.get(language_model)
    if step is None:
        step = _STEPS[language_model] = TextStep(language_model)
    return step
