"""Writes a Llama-architecture GGUF of a given size with random Q8_0 weights, taking every
metadata key (tokenizer and chat template included) from a small real model, for
`models/synthetic` to quantize to Q4_K_M.

    synthetic.py SIZE SOURCE.gguf OUT.gguf
"""

import sys

import numpy as np
import gguf

# name: (blocks, width, feed-forward width, heads, KV heads); the sizes are of the Q4_K_M file.
SHAPES = {
    "0.5": (16, 2048, 5632, 16, 4),
    "1.5": (32, 2560, 6912, 20, 4),
    "4": (32, 4096, 11008, 32, 8),
}
SIZE_LABEL = {"0.5": "0.9B", "1.5": "2.4B", "4": "6.1B"}


def main() -> None:
    size, source, out = sys.argv[1], sys.argv[2], sys.argv[3]
    if size not in SHAPES:
        sys.exit(f"size {size!r}: one of {', '.join(SHAPES)}")
    blocks, width, ff, heads, kv_heads = SHAPES[size]
    head_dim = width // heads
    src = gguf.GGUFReader(source)
    arch = "llama"
    w = gguf.GGUFWriter(out, arch)
    shape_keys = {
        f"{arch}.block_count": blocks,
        f"{arch}.embedding_length": width,
        f"{arch}.feed_forward_length": ff,
        f"{arch}.attention.head_count": heads,
        f"{arch}.attention.head_count_kv": kv_heads,
        f"{arch}.rope.dimension_count": head_dim,
        f"{arch}.context_length": 8192,
    }
    for key, field in src.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if key in shape_keys:
            w.add_uint32(key, shape_keys[key])
            continue
        if key == "general.basename":
            w.add_string(key, f"synthetic-{size}gb")
            continue
        if key == "general.size_label":
            w.add_string(key, SIZE_LABEL[size])
            continue
        if key == "general.file_type":
            w.add_uint32(key, int(gguf.LlamaFileType.MOSTLY_Q8_0))
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, field.contents(), vtype, sub)
    vocab = int(src.fields[f"{arch}.vocab_size"].contents())
    kv_width = head_dim * kv_heads
    rng = np.random.default_rng(0)

    def tensor(name: str, rows: int, cols: int) -> None:
        # Small random weights keep activations finite through many layers.
        a = (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float32)
        q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    def norm(name: str) -> None:
        w.add_tensor(name, np.ones(width, dtype=np.float32))

    tensor("token_embd.weight", vocab, width)
    norm("output_norm.weight")
    for b in range(blocks):
        norm(f"blk.{b}.attn_norm.weight")
        norm(f"blk.{b}.ffn_norm.weight")
        tensor(f"blk.{b}.attn_q.weight", width, width)
        tensor(f"blk.{b}.attn_k.weight", kv_width, width)
        tensor(f"blk.{b}.attn_v.weight", kv_width, width)
        tensor(f"blk.{b}.attn_output.weight", width, width)
        tensor(f"blk.{b}.ffn_gate.weight", ff, width)
        tensor(f"blk.{b}.ffn_up.weight", ff, width)
        tensor(f"blk.{b}.ffn_down.weight", width, ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()


if __name__ == "__main__":
    main()
