#!/usr/bin/env python3
"""Write a tiny llama-architecture GGUF model with random weights.

The tokenizer is copied from one of llama.cpp's vocab-only GGUF files, so only
the weight tensors are random. The model talks gibberish, fast: the hub does not
care what the tokens say. A chat template is added so /v1/chat/completions works.

Usage: tinymodel.py --vocab ggml-vocab-llama-spm.gguf --out tiny.gguf [--seed N] [--name NAME]
                    [--n-embd 64] [--n-layer 2] [--n-head 4] [--n-ff 128] [--n-ctx 32768]

Wider and deeper models (--n-embd, --n-layer) process prompts more slowly on CPU, for
benchmarks where re-reading a long prompt must show in the time to first token.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import gguf
import numpy as np

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def _copy_tokenizer(reader: gguf.GGUFReader, writer: gguf.GGUFWriter) -> int:
    n_vocab = 0
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        value: Any = field.contents()
        vtype = gguf.GGUFValueType(field.types[0])
        if vtype == gguf.GGUFValueType.ARRAY:
            sub = gguf.GGUFValueType(field.types[1])
            if name == "tokenizer.ggml.tokens":
                n_vocab = len(value)
            writer.add_key_value(name, value, vtype, sub_type=sub)
        else:
            writer.add_key_value(name, value, vtype)
    if n_vocab == 0:
        raise SystemExit("vocab file has no tokenizer.ggml.tokens")
    return n_vocab


def write_model(vocab: Path, out: Path, *, seed: int, name: str,
                n_embd: int = 64, n_layer: int = 2, n_head: int = 4, n_ff: int = 128,
                n_ctx: int = 32768) -> None:
    rng = np.random.default_rng(seed)
    reader = gguf.GGUFReader(vocab)
    tmp = out.with_suffix(".tmp")
    writer = gguf.GGUFWriter(tmp, "llama")
    writer.add_name(name)
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    n_vocab = _copy_tokenizer(reader, writer)
    writer.add_chat_template(CHAT_TEMPLATE)

    def rand(*shape: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    ones = np.ones(n_embd, dtype=np.float32)
    writer.add_tensor("token_embd.weight", rand(n_vocab, n_embd))
    writer.add_tensor("output_norm.weight", ones)
    writer.add_tensor("output.weight", rand(n_vocab, n_embd))
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.attn_q.weight", rand(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.attn_k.weight", rand(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.attn_v.weight", rand(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.attn_output.weight", rand(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", rand(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", rand(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", rand(n_embd, n_ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--vocab", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="tiny")
    ap.add_argument("--n-embd", type=int, default=64, help="model width (default 64)")
    ap.add_argument("--n-layer", type=int, default=2, help="transformer blocks (default 2)")
    ap.add_argument("--n-head", type=int, default=4, help="attention heads (default 4)")
    ap.add_argument("--n-ff", type=int, default=0,
                    help="feed-forward width (default: 2 x --n-embd)")
    ap.add_argument("--n-ctx", type=int, default=32768, help="trained context (default 32768)")
    args = ap.parse_args(argv)
    if not (16 <= args.n_embd <= 4096 and 1 <= args.n_layer <= 64 and args.n_head >= 1
            and args.n_embd % args.n_head == 0 and 0 <= args.n_ff <= 16384
            and 256 <= args.n_ctx <= 1 << 20):
        ap.error("need 16 <= n-embd <= 4096 divisible by n-head, 1 <= n-layer <= 64, "
                 "n-ff <= 16384, 256 <= n-ctx <= 1M")
    if args.out.exists():
        print(args.out)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_model(args.vocab, args.out, seed=args.seed, name=args.name, n_embd=args.n_embd,
                n_layer=args.n_layer, n_head=args.n_head, n_ff=args.n_ff or 2 * args.n_embd,
                n_ctx=args.n_ctx)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
