"""Build tiny, offline Hugging Face models (scorers, embedder, generator) for local runs and tests.

    deita-ray make-models models/        # or: python -m deita_ray.tools.tiny_models models/

Each is an ordinary model directory (config.json, model.safetensors, tokenizer.json) that the
Auto classes and vLLM load: a random-init Llama (hidden 64, 2 layers, 2 heads so head_dim 32,
which vLLM's CPU attention accepts; the generator also ends its texts, see build_tiny_generator) and a byte-level BPE tokenizer trained in-process with
digits split individually, so "1".."6" are single tokens. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deita_ray.prompts import COMPLEXITY_TEMPLATE, QUALITY_TEMPLATE
from deita_ray.prompts.chat import VICUNA_CHAT_TEMPLATE

SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", "<unk>"]
MODEL_NAMES = ("scorer-complexity", "scorer-quality", "embedder", "generator")


def _training_corpus() -> list[str]:
    from deita_ray.tools.sample_pool import corpus_sentences

    texts = corpus_sentences()
    texts += [COMPLEXITY_TEMPLATE, QUALITY_TEMPLATE, "0 1 2 3 4 5 6 7 8 9", "USER: ASSISTANT:"]
    return texts


def build_tokenizer(vocab_size: int = 2048):
    """Byte-level BPE trained on the project's own text; BOS added like Llama's tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_training_corpus(), trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    fast.chat_template = VICUNA_CHAT_TEMPLATE
    return fast


def build_tiny_llama(out_dir: str | Path, tokenizer, seed: int, hidden: int = 64, layers: int = 2, heads: int = 2,
                     max_positions: int = 512, init_range: float = 0.1) -> Path:
    """Random-init LlamaForCausalLM saved with its tokenizer. `init_range` is wider than Llama's
    0.02 so the random scorers' digit logits spread and scores differ between prompts."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False, initializer_range=init_range, dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_generator(out_dir: str | Path, tokenizer, seed: int, eos_logit: float = 4.0, hidden: int = 64,
                         layers: int = 2, heads: int = 2) -> Path:
    """A random tiny Llama that ends its sampled texts after ~20 tokens instead of running to the
    token limit, so evolution with it is not all "cut by the token limit". One residual dimension is
    held constant (only an MLP bias writes it), so after the final norm it is a positive constant;
    only EOS reads it, which adds about `eos_logit` to EOS's logit at every step (random logits are
    nearly flat over the vocabulary). Greedy decoding therefore stops at once; sample with it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=1024, mlp_bias=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False, initializer_range=0.1, dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    constant = 32.0 / layers  # dimension 0 of the residual stream is 32 everywhere
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0] = 0
            layer.mlp.down_proj.weight[0] = 0
            layer.mlp.down_proj.bias.zero_()
            layer.mlp.down_proj.bias[0] = constant
        model.lm_head.weight[:, 0] = 0
        # After the norm, dimension 0 is about sqrt(hidden) (it dominates the root mean square).
        model.lm_head.weight[tokenizer.eos_token_id, 0] = eos_logit / hidden ** 0.5
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def make_tiny_models(out_dir: str | Path, seed: int = 0, overwrite: bool = False) -> dict[str, Path]:
    """Build the two scorers and the embedder under `out_dir` (skipped when already there)."""
    out = Path(out_dir)
    paths = {name: out / name for name in MODEL_NAMES}
    if not overwrite and all((p / "config.json").exists() for p in paths.values()):
        return paths
    from deita_ray.io.outputs import check_replaceable

    check_replaceable(str(out), tuple(MODEL_NAMES), "README.json")  # someone's own model of one of these names
    # The record first: a build cut short leaves directories a rerun knows as its own.
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.json").write_text(json.dumps({"what": "tiny random-init models made by deita-ray make-models",
                                                 "seed": seed, "models": list(paths)}, indent=2))
    from transformers.utils import logging as hf_logging

    from deita_ray.runner.quiet import deepspeed_on_cpu_told

    hf_logging.disable_progress_bar()  # a bar per tiny shard says nothing; the caller says what is being made
    tokenizer = build_tokenizer()
    with deepspeed_on_cpu_told():  # save_pretrained imports DeepSpeed through accelerate
        for i, (name, path) in enumerate(paths.items()):
            if name == "generator":
                build_tiny_generator(path, tokenizer, seed=seed + i)
            else:
                build_tiny_llama(path, tokenizer, seed=seed + i)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deita-ray make-models", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", nargs="?", default="models", help="where to write the model directories (default: models)")
    parser.add_argument("--seed", type=int, default=0, help="random-init seed; the same seed gives the same weights")
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if the models exist")


def run(args: argparse.Namespace) -> int:
    paths = make_tiny_models(args.out_dir, seed=args.seed, overwrite=args.overwrite)
    for name, path in paths.items():
        print(f"{name:18s} {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
