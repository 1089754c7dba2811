"""The training function each Ray Train worker runs: TRL's SFTTrainer or DPOTrainer, DeepSpeed optional.

`deita_ray.train.launch.train` hands `train_loop` to a `TorchTrainer`; `build_trainer` is the part
without Ray (the GPU benchmark times it directly where Ray is not installed).
Each worker reads the prepared rows (written once by the driver), builds the TRL trainer with
gradient accumulation derived from the global batch, resumes from Ray Train's latest checkpoint
when there is one, reports a checkpoint at every epoch end (RayTrainReportCallback), and at the
end saves the model in Hugging Face format to `output/model` and reports the final metrics.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile

# A fixed probe whose last-position logits are reported at the end: a test reloads `output/model`
# and must get the same numbers (the saved model is the trained one).
PROBE_TEXT = "USER: What is 2 + 2? ASSISTANT:"
FINAL_METRICS = "_final_metrics.json"


def _precision(cfg: dict, on_gpu: bool) -> dict:
    mode = cfg["precision"]
    if mode == "auto":
        mode = "bf16" if on_gpu else "fp32"
    return {"bf16": mode == "bf16", "fp16": mode == "fp16"}


def _common_args(cfg: dict, output_dir: str, world: int, on_gpu: bool) -> dict:
    """The TRL config's arguments: derived from the typed options, then the `trl` mapping over them as it is."""
    args = dict(
        output_dir=output_dir,
        per_device_train_batch_size=cfg["per_device_batch_size"],
        gradient_accumulation_steps=cfg["global_batch_size"] // (cfg["per_device_batch_size"] * world),
        learning_rate=cfg["learning_rate"],
        num_train_epochs=cfg["epochs"],
        max_steps=cfg["max_steps"],
        lr_scheduler_type=cfg["lr_scheduler"],
        warmup_steps=cfg["warmup_ratio"],  # transformers 5: a float in [0, 1) is a ratio of the total steps
        weight_decay=cfg["weight_decay"],
        logging_steps=cfg["logging_steps"],
        save_strategy="epoch" if cfg["save_every_epoch"] else "no",
        save_total_limit=cfg["keep_checkpoints"],
        report_to="none",  # trl: {report_to: tensorboard | wandb | mlflow} turns a logger on
        seed=cfg["seed"],
        data_seed=cfg["seed"],
        gradient_checkpointing=cfg["gradient_checkpointing"],
        deepspeed=cfg["deepspeed_config"],
        use_cpu=not on_gpu,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=True,
        **_precision(cfg, on_gpu),
    )
    args.update(cfg["trl"])
    return args


def _read_prepared(path: str):
    import datasets
    import pyarrow.parquet as pq

    from deita_ray.io.fs import url_to_fs

    filesystem, local = url_to_fs(path)
    with filesystem.open(local, "rb") as f:
        table = pq.read_table(f)
    return datasets.Dataset.from_dict(table.to_pydict())


def _upload(local_dir: str, target: str) -> None:
    """The final model to OUTPUT/model: an earlier model of ours there is replaced (the driver refused a model
    directory it did not write); marked first, so an upload cut short is still known as ours."""
    from deita_ray.io.fs import url_to_fs
    from deita_ray.io.outputs import clear_own_tree, mark_tree

    clear_own_tree(target)
    mark_tree(target)
    fs, path = url_to_fs(target)
    fs.put(local_dir.rstrip("/") + "/", path, recursive=True)


def load_training_tokenizer(model: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_trainer(cfg: dict, dataset, tokenizer, output_dir: str, world: int, on_gpu: bool, callbacks: list):
    """(TRL trainer, its argument dict) for one worker: what `train_loop` runs under Ray Train, and what
    `benchmarks/bench_gpu.py` times on a GPU machine without Ray."""
    args = _common_args(cfg, output_dir, world, on_gpu)
    if cfg["task"] == "dpo":
        from trl import DPOConfig, DPOTrainer

        dpo_args = DPOConfig(**{"beta": cfg["beta"], "max_length": cfg["max_length"], **args})
        ref_model = None  # TRL then builds the frozen reference from the policy's own starting weights
        if cfg["ref_model"] and cfg["ref_model"] != cfg["model"]:
            from transformers import AutoModelForCausalLM

            # After DPOConfig exists, so that under ZeRO-3 the load is partitioned (zero.Init).
            ref_model = AutoModelForCausalLM.from_pretrained(cfg["ref_model"])
        trainer = DPOTrainer(model=cfg["model"], ref_model=ref_model, args=dpo_args, train_dataset=dataset,
                             processing_class=tokenizer, callbacks=callbacks)
    else:  # sft and scorer: pre-tokenized rows with assistant masks (loss on the masked tokens only)
        from trl import SFTConfig, SFTTrainer

        trainer = SFTTrainer(model=cfg["model"], args=SFTConfig(**{"max_length": cfg["max_length"], **args}),
                             train_dataset=dataset, processing_class=tokenizer, callbacks=callbacks)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # it prints every log as a dictionary; progress_lines says it in one line
    trainer.add_callback(progress_lines(cfg["task"]))
    return trainer, args


def progress_lines(task: str):
    """One line per logging step from the first worker: step, epoch, loss and the learning rate."""
    from transformers import TrainerCallback

    class ProgressLines(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs and "loss" in logs:
                rate = f", lr {logs['learning_rate']:.3g}" if "learning_rate" in logs else ""
                print(f"{task}: step {state.global_step:,}/{state.max_steps:,} (epoch {state.epoch or 0:.2f}) loss "
                      f"{logs['loss']:.4f}{rate}", flush=True)

    return ProgressLines()


def train_loop(loop_config: dict) -> None:
    import ray.train
    import torch

    from deita_ray.runner.quiet import deepspeed_on_cpu_told

    with deepspeed_on_cpu_told():  # DeepSpeed chooses its accelerator once, when transformers first imports it
        import deepspeed  # noqa: F401
        from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer
    _quiet_result_lines()

    cfg = loop_config["config"]
    context = ray.train.get_context()
    world, rank = context.get_world_size(), context.get_world_rank()
    if cfg["use_gpu"]:  # GPUs asked for and CUDA unusable: say so, rather than train on the CPU defaults
        from deita_ray.runner.session import check_cuda_usable

        check_cuda_usable(f"training worker {rank} was given a GPU")
    on_gpu = cfg["use_gpu"]
    _tensorboard_dir(cfg)
    if cfg["deepspeed_config"]:
        import deepspeed

        # Set up DeepSpeed's own view of the process group before any model is built: building
        # the DPO reference model under zero.Init fails otherwise (measured, see cpu-stack notes).
        deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
    tokenizer = load_training_tokenizer(cfg["model"])
    dataset = _read_prepared(loop_config["prepared"])
    output_dir = tempfile.mkdtemp(prefix=f"deita-train-{cfg['task']}-r{rank}-")
    trainer, args = build_trainer(cfg, dataset, tokenizer, output_dir, world, on_gpu, [RayTrainReportCallback()])
    trainer = prepare_trainer(trainer)

    checkpoint = ray.train.get_checkpoint() if cfg["resume"] else None
    resumed_step = None
    with checkpoint.as_directory() if checkpoint else contextlib.nullcontext() as restored:
        resumed_from = os.path.join(restored, RayTrainReportCallback.CHECKPOINT_NAME) if restored else None
        resumed_step = _step_of(resumed_from)
        result = trainer.train(resume_from_checkpoint=resumed_from)

    # Every rank takes part in saving (ZeRO-3 gathers the shards); rank 0 uploads the HF model.
    final_local = os.path.join(output_dir, "final-model")
    trainer.save_model(final_local)
    if rank == 0:
        tokenizer.save_pretrained(final_local)
        _upload(final_local, posixpath.join(cfg["output"], "model"))
    model = trainer.model
    model.eval()
    probe = tokenizer(PROBE_TEXT, return_tensors="pt").to(model.device)
    with torch.no_grad():  # every rank runs it: under ZeRO-3 the forward gathers the shards
        probe_logits = model(**probe).logits[0, -1, :16].float().tolist()
    state = trainer.state
    losses = [(h["step"], h["loss"]) for h in state.log_history if "loss" in h]
    metrics = {**result.metrics, "global_step": state.global_step, "epoch": state.epoch,
               "num_input_tokens_seen": int(state.num_input_tokens_seen or 0), "losses": losses,
               "resumed_from_step": resumed_step, "probe_logits": probe_logits, "world_size": world,
               "gradient_accumulation_steps": args["gradient_accumulation_steps"]}
    if rank == 0:  # Ray's Result carries the last checkpoint's metrics; the final ones go to storage
        from deita_ray.io.fs import write_json

        write_json(posixpath.join(cfg["output"], FINAL_METRICS), metrics)
    ray.train.report(metrics)
    shutil.rmtree(output_dir, ignore_errors=True)


def _quiet_result_lines() -> None:
    """Ray Train logs every reported result with all its metrics at INFO on a logger named by its file's path
    (so LoggingConfig's level misses it): one long line per report on the driver's console that repeats what the
    step lines said. Dropped here; Ray's log files keep the rest."""
    from deita_ray.runner.quiet import drop_log_lines

    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray layout: its lines stay
        return
    drop_log_lines(context.__file__, "Reporting training result")


def _tensorboard_dir(cfg: dict) -> None:
    """TensorBoard logs (trl: {report_to: tensorboard}) go to OUTPUT/logs where the output is a path the workers
    share; transformers 5 otherwise writes them under the worker's temporary run directory, removed at the end.
    TENSORBOARD_LOGGING_DIR in the job's environment chooses another place."""
    wanted = cfg["trl"].get("report_to")
    wanted = [wanted] if isinstance(wanted, str) else list(wanted or [])
    if ("tensorboard" in wanted or "all" in wanted) and "://" not in cfg["output"]:
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", os.path.join(cfg["output"], "logs"))


def _step_of(checkpoint_dir: str | None) -> int | None:
    """Global step of an HF checkpoint (its trainer_state.json), None when training started fresh."""
    if not checkpoint_dir:
        return None
    import json

    with open(os.path.join(checkpoint_dir, "trainer_state.json")) as f:
        return int(json.load(f)["global_step"])
