"""One decode token through the Qwen3-VL text stack, with q/k/v and gate/up each read as one matrix.

A decode step is a chain of matrix-vector products, and separate ones leave bandwidth unused: on an H200 the 2B's
28 layers take 1.91 ms as 7 GEMVs a layer (1.48 TB/s) and 1.13 ms as 4 with q|k|v and gate|up fused (2.50 TB/s;
BENCHMARKS.md). `TextDecodeStep` is the decoder layer's forward for a single text token, written against the
model's own modules (norms, o/down projections, rotary embedding, `apply_rotary_pos_emb`), with the two fused
products. For a text token t = h = w, so the interleaved 3-D rotary is the model's rotary at that position.

`fuse_weights=True` re-points the model's q/k/v and gate/up weights at row slices of one new matrix per layer
(`.data` swapped, the Parameter objects kept): the model's own forward reads the same values, and no memory is
added. Only for a model nothing trains: an optimizer's flat parameter buffers (DeepSpeed, FSDP) would no longer
reach these weights, and `save_pretrained` would see shared storage; the decoder fuses only when `can_fuse` (plain
Linear projections, no text parameter requiring grad: `load_model` returns such a model). Unfused, the same step
runs 7 products a layer.

Attention is the caller's (`attention(module, q, k, v, mask, scaling=...)`, transformers' signature); the K/V go
through `cache.update(k, v, layer_index)`. Only `Qwen3VLTextModel` is supported (`supports`); another text stack
takes the model's own forward (graph_decode.py falls back to it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.models.qwen3_vl import modeling_qwen3_vl


def supports(language_model) -> bool:
    return isinstance(language_model, modeling_qwen3_vl.Qwen3VLTextModel)


def can_fuse(language_model) -> bool:
    """Fusing re-points weights: only for plain Linear projections (no LoRA wrappers) of a model nothing trains."""
    if any(p.requires_grad for p in language_model.parameters()):
        return False
    return all(type(lin) is torch.nn.Linear for layer in language_model.layers
               for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                           layer.mlp.gate_proj, layer.mlp.up_proj))


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


class TextDecodeStep:
    def __init__(self, language_model, attention, fuse_weights: bool = False):
        if not supports(language_model):
            raise TypeError(f"TextDecodeStep supports Qwen3VLTextModel, not {type(language_model).__name__}")
        self.lm, self.attention = language_model, attention
        self.fused = bool(fuse_weights)
        self.qkv, self.gate_up = [], []
        if self.fused:
            for layer in language_model.layers:
                attn, mlp = layer.self_attn, layer.mlp  # Qwen3-VL's MLP projections have no bias
                self.qkv.append(_alias_rows([attn.q_proj, attn.k_proj, attn.v_proj]))
                self.gate_up.append(_alias_rows([mlp.gate_proj, mlp.up_proj])[0])

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor, cache, mask: torch.Tensor) -> torch.Tensor:
        """input_ids (1, 1), positions (3, 1, 1); returns the final-norm hidden state (1, 1, hidden)."""
        lm = self.lm
        h = lm.embed_tokens(input_ids)
        cos, sin = lm.rotary_emb(h, positions)
        for i, layer in enumerate(lm.layers):
            attn, mlp = layer.self_attn, layer.mlp
            d = attn.head_dim
            x = layer.input_layernorm(h)
            if self.fused:
                weight, bias = self.qkv[i]
                q, k, v = F.linear(x, weight, bias).split(
                    [attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features], dim=-1)
            else:
                q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
            q = attn.q_norm(q.view(1, 1, -1, d)).transpose(1, 2)
            k = attn.k_norm(k.view(1, 1, -1, d)).transpose(1, 2)
            v = v.view(1, 1, -1, d).transpose(1, 2)
            q, k = modeling_qwen3_vl.apply_rotary_pos_emb(q, k, cos, sin)
            k, v = cache.update(k, v, i)
            out, _ = self.attention(attn, q, k, v, mask, scaling=attn.scaling)
            h = h + attn.o_proj(out.reshape(1, 1, -1))
            x = layer.post_attention_layernorm(h)
            if self.fused:
                gate, up = F.linear(x, self.gate_up[i]).chunk(2, dim=-1)
            else:
                gate, up = mlp.gate_proj(x), mlp.up_proj(x)
            h = h + mlp.down_proj(mlp.act_fn(gate) * up)
        return lm.norm(h)
