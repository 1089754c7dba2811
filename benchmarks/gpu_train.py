"""bench_gpu.py's train part: SFT steps through the project's trainer builder, DDP and ZeRO-2 (run by bench_gpu.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from gpu_common import (
    LLAMA_SHAPES,
    build_random_llama,
    forward_flops,
    free,
    load_conversations,
    sync,
)


def write_long_conversations(path: Path, rows: int, merge: int) -> None:
    """ShareGPT JSONL whose dialogues each join `merge` of the pool's conversations (their turns in order),
    so sequences are as long as alignment data's multi-turn dialogues rather than single short turns."""
    conversations = load_conversations(rows * merge)
    with open(path, "w") as f:
        for i in range(rows):
            turns = [m for c in conversations[i * merge:(i + 1) * merge] for m in c if m["from"] != "system"]
            f.write(json.dumps({"id": f"long-{i}", "conversations": turns}) + "\n")


def part_train(device, opts: dict, peak: dict, root: Path) -> dict:
    import datasets
    from transformers import TrainerCallback

    from deita_ray.train.config import load_train_config
    from deita_ray.train.launch import prepare_rows
    from deita_ray.train.worker import build_trainer, load_training_tokenizer

    name = opts["train_shape"]
    shape = LLAMA_SHAPES[name]
    path = build_random_llama(root / name, shape, device)
    pool = root / "train-pool.jsonl"
    write_long_conversations(pool, rows=opts["train_steps"] * opts["train_batch"] + 16, merge=opts["train_merge"])
    on_gpu = device.type == "cuda"

    class StepClock(TrainerCallback):  # steady state: the steps after the first few (allocations, kernels)
        def __init__(self):
            self.marks = []

        def on_step_end(self, args, state, control, **kwargs):
            sync(device)
            self.marks.append((time.perf_counter(), int(state.num_input_tokens_seen or 0)))

    cases = []
    backends = ["none"]
    try:
        import deepspeed  # noqa: F401

        backends.append("zero2")
    except ImportError as exc:
        print(f"train   deepspeed does not import ({type(exc).__name__}: {exc}): ZeRO-2 not measured", flush=True)
    for backend in backends:
        config = load_train_config("sft", data={
            "model": str(path), "data": [str(pool)], "output": str(root / f"train-{backend}"),
            "global_batch_size": opts["train_batch"], "per_device_batch_size": opts["train_batch"],
            "max_steps": opts["train_steps"], "max_length": opts["max_length"], "deepspeed": backend,
            "use_gpu": on_gpu, "precision": "bf16" if on_gpu else "fp32", "save_every_epoch": False,
            "logging_steps": 1, "learning_rate": 1e-5})
        table, stats = prepare_rows(config)
        dataset = datasets.Dataset.from_dict(table.to_pydict())
        cfg = {**dataclasses.asdict(config), "deepspeed_config": config.deepspeed_config()}
        if backend != "none":  # one process is the whole world: DeepSpeed still wants a process group
            import deepspeed

            os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                              MASTER_PORT=os.environ.get("MASTER_PORT", "29533"))
            deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
        clock = StepClock()
        tokenizer = load_training_tokenizer(str(path))
        with tempfile.TemporaryDirectory() as out:
            trainer, _ = build_trainer(cfg, dataset, tokenizer, out, world=1, on_gpu=on_gpu, callbacks=[clock])
            trainer.train()
            losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
            del trainer
        free(device)
        warm = min(3, len(clock.marks) - 2)
        (t_a, tok_a), (t_b, tok_b) = clock.marks[warm], clock.marks[-1]
        steps = len(clock.marks) - 1 - warm
        tokens_per_s = (tok_b - tok_a) / (t_b - t_a)
        seq = opts["max_length"]
        mean_len = (tok_b - tok_a) / (steps * opts["train_batch"])
        flops = 3.0 * forward_flops(shape, [int(mean_len)] * (steps * opts["train_batch"]), int(tok_b - tok_a))
        case = {"deepspeed": backend, "shape": name, **shape, "steps_timed": steps, "batch": opts["train_batch"],
                "mean_tokens_per_sequence": round(mean_len, 1), "max_length": seq, "rows_used": stats["rows_used"],
                "tokens_per_s": round(tokens_per_s), "seconds_per_step": round((t_b - t_a) / steps, 4),
                "mfu": flops / (t_b - t_a) / 1e12 / peak["bf16_tflops"], "losses": losses,
                "loss_finite": bool(losses) and all(np.isfinite(losses))}
        cases.append(case)
        print(f"train   {name:14s} deepspeed {backend:5s} {case['tokens_per_s']:,} tokens/s  "
              f"{case['seconds_per_step']} s/step  MFU {case['mfu']:.1%}  loss {losses[0]:.3f} -> {losses[-1]:.3f}",
              flush=True)
    return {"cases": cases}
