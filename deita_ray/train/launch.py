"""`deita-ray train sft|dpo|scorer`: prepare the rows, then run TRL on Ray Train workers (DeepSpeed optional).

    from deita_ray.train.config import load_train_config
    from deita_ray.train.launch import train
    summary = train(load_train_config("sft", data={"model": "m/", "data": ["sel.jsonl"], "output": "runs/sft"}))

Layout under `output` (local or an object-store URL reachable from every node):
  prepared/train.parquet   the tokenized (SFT, scorer) or rendered (DPO) rows every worker reads
  checkpoints/             Ray Train's run: a checkpoint per epoch; a rerun resumes from the latest
  model/                   the final model, Hugging Face format (loads with from_pretrained, and a
                           trained scorer loads straight into `deita-ray score`)
  train_summary.json       rows used / skipped by reason, steps, losses, tokens/s, where things are
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import sys
import time

from deita_ray.io import fs
from deita_ray.runner.layout import TRAIN_SUMMARY
from deita_ray.runner.summary import common
from deita_ray.train.config import TrainConfig


def prepare_rows(config: TrainConfig):
    """(Arrow table, stats) for the task, from the config's data files."""
    from transformers import AutoTokenizer

    from deita_ray.train import data

    if config.task == "scorer":  # scorer prompts are tokenised exactly as `deita-ray score` reads them
        from deita_ray.prompts.tokens import load_tokenizer

        return data.prepare_scorer(config.data, load_tokenizer(config.model), config.kind, config.max_length)
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    if config.task == "sft":
        return data.prepare_sft(config.data, tokenizer, config.template, config.max_length)
    return data.prepare_dpo(config.data, tokenizer, config.template, config.max_prompt_length, config.max_length,
                            config.max_pairs, config.seed)


def train(config: TrainConfig, log=print, address: str | None = None, num_cpus: int | None = None) -> dict:
    """Check the inputs, hold the output, prepare the rows, train on Ray Train workers; returns the summary
    (OUTPUT/train_summary.json, the completion record, written last)."""
    from deita_ray.runner.lock import hold_output

    started = time.time()
    output = fs.absolute(config.output)
    # Workers run in another directory: local models by absolute path, hub names as they are.
    config = dataclasses.replace(config, output=output, model=fs.absolute_model(config.model),
                                 ref_model=fs.absolute_model(config.ref_model))
    partial = check_inputs(config, log)
    with hold_output(output):
        return _train(config, output, started, partial, log, address, num_cpus)


def check_inputs(config: TrainConfig, log=print) -> list[str]:
    """Before anything under the output is touched: the data and a local starting model are complete outputs
    of their steps (or the user's own files), and the output keeps clear of them. Returns the inputs read on
    purpose although incomplete (--allow-partial)."""
    from deita_ray.io.outputs import check_output
    from deita_ray.runner.completion import check_complete

    models = [m for m in (config.model, config.ref_model) if m and os.path.exists(m)]
    partial = check_complete(list(config.data) + models, config.allow_partial, log=log)
    check_output(config.output, list(config.data) + models)
    return partial


def training_flops(config: TrainConfig, table, tokens: int) -> float:
    """Model FLOPs of the training run (engines/flops.py): forward and backward (3 x forward) over the tokens
    seen, the LM head at every position; DPO adds the reference model's forward (4 x). Attention from the
    prepared rows' lengths (sum of L^2 over sum of L, per token)."""
    from deita_ray.engines.flops import ModelShape

    shape = ModelShape.of(config.model)
    if shape is None or not tokens:
        return 0.0
    per_token_attention = 0.0
    if "input_ids" in table.column_names:
        import pyarrow.compute as pc

        lengths = pc.list_value_length(table.column("input_ids"))
        total = pc.sum(lengths).as_py() or 1
        per_token_attention = 2.0 * shape.layers * shape.hidden * (pc.sum(pc.multiply(lengths, lengths)).as_py() / total)
    forward = tokens * (2.0 * shape.body_params + 2.0 * shape.hidden * shape.vocab + per_token_attention)
    return (4.0 if config.task == "dpo" else 3.0) * forward


def training_peak(config: TrainConfig) -> dict | None:
    """The FLOP/s limit of the workers: per GPU (or CPU core) where they run, times the GPUs (or CPUs) they hold."""
    import ray

    from deita_ray.runner.peak import device_peak

    try:
        gpus = 1 if config.use_gpu else 0
        measure = ray.remote(device_peak).options(num_cpus=min(config.cpus_per_worker, 1), num_gpus=gpus)
        unit = ray.get(measure.remote(gpus), timeout=120)
        units = config.num_workers * (1 if gpus else config.cpus_per_worker)
        return {**unit, "units": units, "total": unit["flops"] * units}
    except Exception as exc:  # a report, never a reason to fail a finished training
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}


def check_resources(config: TrainConfig, option: str = "") -> None:
    """The workers against the cluster: ResourceError in one line when they cannot all be placed."""
    from deita_ray.runner.session import check_workers

    names = ("num_workers", "cpus_per_worker", "use_gpu")
    options = " / ".join(f"{option}.{n}" if option else f"--{n.replace('_', '-')}" for n in names)
    check_workers(f"{config.task} training", config.num_workers, config.cpus_per_worker,
                  1.0 if config.use_gpu else 0.0, options)


def _train(config: TrainConfig, output: str, started: float, partial: list[str], log, address: str | None,
           num_cpus: int | None) -> dict:
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from deita_ray.io.fs import remove, url_to_fs, write_json
    from deita_ray.io.outputs import OutputError, clear_own_tree, mark_tree, owns_tree
    from deita_ray.io.writer import write_part
    from deita_ray.runner.session import ensure_ray
    from deita_ray.train.worker import FINAL_METRICS, train_loop

    remove(posixpath.join(output, TRAIN_SUMMARY))  # the completion record: back only when this run has finished
    model_dir = posixpath.join(output, "model")
    if url_to_fs(model_dir)[0].exists(url_to_fs(model_dir)[1]) and not owns_tree(model_dir):
        raise OutputError(f"{model_dir} exists and was not written by deita-ray; move it away or choose another output")
    table, stats = prepare_rows(config)
    quarantine = stats.pop("quarantine", None)
    stats["rows_quarantined"] = quarantine.num_rows if quarantine is not None else 0
    if quarantine is not None and quarantine.num_rows:  # every skipped row, with its reason
        write_part(quarantine, posixpath.join(output, "quarantine"), "train.parquet")
    if stats.get("sampling"):
        drawn = stats["sampling"]
        log(f"{config.task}: {drawn['max_pairs']:,} pairs drawn at random (seed {drawn['seed']}) of "
            f"{drawn['pairs_read']:,} read")
    log(f"{config.task}: {stats['rows_used']:,} of {stats['rows_in']:,} rows usable" +
        (f", skipped {stats['rows_skipped']:,}: " + "; ".join(f"{n} x {r}" for r, n in stats["skipped"].items())
         if stats["rows_skipped"] else "") + (f"; {stats['rows_cut_to_fit']:,} cut to fit" if stats["rows_cut_to_fit"] else ""))
    write_part(table, posixpath.join(output, "prepared"), "train.parquet")
    prepared = posixpath.join(output, "prepared", "train.parquet")
    checkpoints = posixpath.join(output, "checkpoints")
    if not config.resume:
        clear_own_tree(checkpoints)  # a fresh start was asked for: forget earlier checkpoints (only ours)
    mark_tree(checkpoints)  # Ray Train names what it writes there; the marker says the tree is ours to remove
    ensure_ray(address, num_cpus)
    check_resources(config)  # Ray Train would wait for workers the cluster cannot place, without end
    resources = {"CPU": config.cpus_per_worker, **({"GPU": 1} if config.use_gpu else {})}
    loop_config = {"config": {**dataclasses.asdict(config), "deepspeed_config": config.deepspeed_config()},
                   "prepared": prepared}
    log(f"{config.num_workers} worker(s), deepspeed {config.deepspeed}, global batch {config.global_batch_size} "
        f"= {config.per_device_batch_size} per device x {config.num_workers} workers x {config.grad_accumulation} "
        f"accumulation steps; checkpoints to {posixpath.join(output, 'checkpoints')}")
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu,
                                     resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if config.use_gpu else "gloo"),
        run_config=RunConfig(name="checkpoints", storage_path=output,
                             # Ray Train's own INFO lines (resources requested, the worker group, every reported
                             # result with its metrics) are no news on the console; its system log keeps them.
                             logging_config=LoggingConfig(log_level="WARNING"),
                             checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints),
                             failure_config=FailureConfig(max_failures=0),
                             # Ray's patched print() ignores redirected stdout, so dill's disassembly
                             # (datasets hashes map functions with it) would flood the log.
                             # Progress bars of datasets' maps and of model loading and saving on every worker would
                             # reach the driver's console; the worker prints one line per logged step instead.
                             worker_runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
                                                              "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
                                                              "HF_HUB_DISABLE_PROGRESS_BARS": "1"}}),
    )
    metrics_fs, metrics_path = url_to_fs(posixpath.join(output, FINAL_METRICS))
    if metrics_fs.exists(metrics_path):
        metrics_fs.rm(metrics_path)  # so a stale file can never pass for this run's result
    from deita_ray.runner.quiet import native_noise_filtered

    with native_noise_filtered():  # the controller's actors repeat Ray Data's constructor-argument warning
        trainer.fit()
    with metrics_fs.open(metrics_path) as f:
        metrics = json.load(f)
    seconds = time.time() - started
    runtime = metrics.get("train_runtime") or seconds
    flops = training_flops(config, table, metrics.get("num_input_tokens_seen") or 0)
    peak = training_peak(config) if flops else None
    tokens = metrics.get("num_input_tokens_seen")
    summary = {
        **common(config.task, stats["rows_in"], stats["rows_used"], stats["rows_skipped"], round(seconds, 2),
                 tokens=tokens, tokens_per_s=round((tokens or 0) / max(runtime, 1e-9), 1),
                 model_flops=flops or None, model_flops_per_s=round(flops / runtime) if flops else None,
                 peak_fraction=round(flops / runtime / peak["total"], 4) if flops and peak and peak.get("total")
                 else None),
        "peak": peak, "task": config.task, "rows": stats, "global_step": metrics.get("global_step"), "epoch": metrics.get("epoch"),
        "resumed_from_step": metrics.get("resumed_from_step"), "train_loss": metrics.get("train_loss"),
        "losses": metrics.get("losses"), "num_input_tokens_seen": tokens, "train_runtime_s": runtime,
        "world_size": metrics.get("world_size"), "gradient_accumulation_steps": metrics.get("gradient_accumulation_steps"),
        "probe_logits": metrics.get("probe_logits"), "partial_inputs": partial,
        "model": posixpath.join(output, "model"), "checkpoints": posixpath.join(output, "checkpoints"),
        "config": dataclasses.asdict(config),
    }
    write_json(posixpath.join(output, TRAIN_SUMMARY), summary)
    return summary


def format_summary(s: dict) -> str:
    rows = s["rows"]
    lines = [f"task         {s['task']}: {rows['rows_used']:,} rows used, {rows['rows_skipped']:,} skipped",
             f"steps        {s['global_step']} (epoch {s['epoch']:.2f})" +
             (f", resumed from step {s['resumed_from_step']}" if s.get("resumed_from_step") else ""),
             f"loss         first {s['losses'][0][1]:.4f} -> last {s['losses'][-1][1]:.4f}" if s.get("losses") else "loss         (none logged)",
             f"throughput   {s['tokens_per_s']:,.0f} tokens/s over {s['world_size']} worker(s)",
             f"model        {s['model']}  (Hugging Face format)"]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - the CLI is `deita-ray train`
    sys.exit("use `deita-ray train sft|dpo|scorer --help`")
