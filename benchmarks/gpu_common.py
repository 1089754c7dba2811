"""Pieces every part of benchmarks/bench_gpu.py shares: shapes, random-init Llamas, FLOP counts, device sync."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

LLAMA_SHAPES = {  # name: hidden, layers, heads, kv heads, intermediate, vocab
    "llama2-7b": dict(hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008, vocab=32000),
    "llama2-13b": dict(hidden=5120, layers=40, heads=40, kv_heads=40, intermediate=13824, vocab=32000),
    "tinyllama-1.1b": dict(hidden=2048, layers=22, heads=32, kv_heads=4, intermediate=5632, vocab=32000),
    "smoke": dict(hidden=64, layers=2, heads=2, kv_heads=2, intermediate=128, vocab=2048),
}
BUILT = "_built"  # written after a model's save completes


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def body_params(shape: dict) -> int:
    """Parameters of the transformer body (no embedding, no LM head)."""
    h, kv = shape["hidden"], shape["hidden"] * shape["kv_heads"] // shape["heads"]
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * shape["intermediate"] + 2 * h
    return shape["layers"] * per_layer + h


def forward_flops(shape: dict, lengths: list[int], lm_head_positions: int) -> float:
    """Forward FLOPs over sequences of these lengths, the LM head applied at `lm_head_positions` positions."""
    tokens = float(sum(lengths))
    attention = 2.0 * shape["layers"] * shape["hidden"] * float(sum(n * n for n in lengths))
    return 2.0 * body_params(shape) * tokens + attention + 2.0 * shape["hidden"] * shape["vocab"] * lm_head_positions


def build_random_llama(path: Path, shape: dict, device) -> Path:
    """A random-init Llama of `shape` in bf16 (fp32 on a CPU smoke run), made on `device`, saved with the
    project's tokenizer (its ids are a subset of the model's vocabulary)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from deita_ray.tools.tiny_models import build_tokenizer

    if (path / BUILT).exists():  # a directory without the marker is a save that did not finish
        return path
    shutil.rmtree(path, ignore_errors=True)
    tokenizer = build_tokenizer()
    config = LlamaConfig(vocab_size=max(shape["vocab"], len(tokenizer)), hidden_size=shape["hidden"],
                         intermediate_size=shape["intermediate"], num_hidden_layers=shape["layers"],
                         num_attention_heads=shape["heads"], num_key_value_heads=shape["kv_heads"],
                         max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=False, initializer_range=0.1 if shape is LLAMA_SHAPES["smoke"] else 0.02)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):  # initialised on the GPU, in bf16 from the start (13B: 26 GB, not 52 + 26)
        model = LlamaForCausalLM._from_config(config, dtype=dtype)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / BUILT).write_text("complete\n")
    del model
    free(device)
    return path


def load_conversations(samples: int) -> list[list[dict]]:
    from deita_ray.io.reader import plan_reads, read_all
    from deita_ray.tools.sample_pool import make_pool

    with tempfile.TemporaryDirectory() as tmp:
        make_pool(tmp, samples=samples, seed=3)
        pool, _ = read_all(plan_reads([tmp]))
    return pool.column("conversations").to_pylist()


def engine_dtype(device) -> str:
    return "bfloat16" if device.type == "cuda" else "float32"


def free(device) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
