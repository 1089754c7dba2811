"""Training on Ray Train for real: TRL SFT and DPO under DDP, ZeRO-2 and ZeRO-3 (2 gloo workers), resume,
and the scorer loop (train a tiny scorer on labels, then `deita-ray score` ranks held-out samples)."""

import json
import random

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from deita_ray.train.config import load_train_config
from deita_ray.train.launch import train
from deita_ray.train.worker import PROBE_TEXT

pytestmark = pytest.mark.ray
BACKENDS = ["none", "zero2", "zero3"]
ANSWERS = ["red red red", "blue blue", "green green green", "black"]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("train-data")
    sft = [{"conversations": [{"from": "human", "value": f"Say the colour number {i % 4}."},
                              {"from": "gpt", "value": ANSWERS[i % 4]}]} for i in range(32)]
    dpo = [{"prompt": f"Say colour {i % 4}", "chosen": ANSWERS[i % 4], "rejected": "purple dog"} for i in range(32)]
    return {"sft": _jsonl(d / "sft.jsonl", sft), "dpo": _jsonl(d / "dpo.jsonl", dpo)}


@pytest.fixture(scope="module")
def finished():
    return {}  # (task, backend) -> summary, shared by the tests below


def _train(task, model, data, output, **values):
    base = {"model": str(model), "data": [data], "output": str(output), "num_workers": 2, "global_batch_size": 8,
            "per_device_batch_size": 2, "epochs": 3, "learning_rate": 1e-3, "lr_scheduler": "constant",
            "warmup_ratio": 0.0, "max_length": 128, "seed": 7}
    return train(load_train_config(task, data={**base, **values}), log=lambda *_: None)


def _probe_logits(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        return model(**tokenizer(PROBE_TEXT, return_tensors="pt")).logits[0, -1, :16].numpy()


def _check_run(summary, output):
    assert summary["world_size"] == 2 and summary["gradient_accumulation_steps"] == 2  # 8 = 2 per device x 2 x 2
    assert summary["global_step"] == 12 and summary["rows"]["rows_used"] == 32  # 32 rows / 8 per step x 3 epochs
    # The saved Hugging Face model is the trained one: reloaded, it gives the worker's own logits.
    np.testing.assert_allclose(_probe_logits(output / "model"), summary["probe_logits"], atol=1e-5)
    checkpoints = sorted(p for p in (output / "checkpoints").iterdir() if p.is_dir() and p.name.startswith("checkpoint_"))
    assert len(checkpoints) == 2 and (checkpoints[-1] / "checkpoint" / "trainer_state.json").exists()  # keep 2, one per epoch


@pytest.mark.parametrize("backend", BACKENDS)
def test_sft_learns_and_saves_under_each_backend(ray_session, tiny_models, train_data, tmp_path, finished, backend):
    # Any TRL option passes through untouched: here a TensorBoard log, which deita-ray itself never turns on.
    logs = {"trl": {"report_to": "tensorboard"}} if backend == "none" else {}
    summary = _train("sft", tiny_models["scorer-complexity"], train_data["sft"], tmp_path, deepspeed=backend, **logs)
    _check_run(summary, tmp_path)
    losses = [loss for _, loss in summary["losses"]]
    assert losses[-1] < 0.5 * losses[0], losses
    assert bool(list((tmp_path / "logs").rglob("events.out.tfevents*"))) == bool(logs)  # OUTPUT/logs
    finished[("sft", backend)] = summary
    finished[("sft", backend, "output")] = tmp_path
    if ("sft", "none") in finished and backend != "none":
        # fp32 with the same data order: sharding optimizer state and parameters does not change the math.
        reference = [loss for _, loss in finished[("sft", "none")]["losses"]]
        np.testing.assert_allclose(losses, reference, rtol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dpo_learns_and_saves_under_each_backend(ray_session, tiny_models, train_data, tmp_path, backend):
    summary = _train("dpo", tiny_models["scorer-complexity"], train_data["dpo"], tmp_path, deepspeed=backend)
    _check_run(summary, tmp_path)
    losses = [loss for _, loss in summary["losses"]]
    assert abs(losses[0] - np.log(2)) < 1e-3  # policy == reference at the start
    assert losses[-1] < 0.3, losses


def test_rerun_resumes_from_the_latest_epoch_checkpoint(ray_session, tiny_models, train_data, tmp_path, finished):
    import shutil

    if ("sft", "none") not in finished:
        out = tmp_path / "reference"
        finished[("sft", "none")] = _train("sft", tiny_models["scorer-complexity"], train_data["sft"], out)
        finished[("sft", "none", "output")] = out
    # On an output that holds another run's checkpoints (steps 8 and 12), `resume: false` starts over.
    run = tmp_path / "run"
    shutil.copytree(finished[("sft", "none", "output")], run)
    first = _train("sft", tiny_models["scorer-complexity"], train_data["sft"], run, epochs=2, resume=False)
    assert first["global_step"] == 8 and first["resumed_from_step"] is None
    # The same run asked for a third epoch: it starts from its own step-8 checkpoint, not from scratch.
    again = _train("sft", tiny_models["scorer-complexity"], train_data["sft"], run, epochs=3)
    assert again["resumed_from_step"] == 8 and again["global_step"] == 12
    # With a constant learning rate, steps 9-12 match those of the uninterrupted 3-epoch run: the
    # weights, optimizer state and data order all came back from the checkpoint.
    resumed = dict(again["losses"])
    straight = dict(finished[("sft", "none")]["losses"])
    np.testing.assert_allclose([resumed[s] for s in range(9, 13)], [straight[s] for s in range(9, 13)], rtol=1e-4)


KEYWORDS = ["apple", "river", "stone", "cloud", "music", "paper"]  # keyword k means complexity score k + 1
FILLER = "please tell me about the way people think of this in a short and clear answer today".split()


def _labelled(n, seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        score = rng.randint(1, 6)
        words = rng.sample(FILLER, 6)
        words.insert(rng.randint(0, 6), KEYWORDS[score - 1])
        rows.append({"instruction": " ".join(words), "score": score})
    return rows


def test_trained_scorer_ranks_held_out_samples(ray_session, tiny_models, tmp_path):
    """The Deita scorer loop for real: labels -> `train scorer` -> `deita-ray score` on unseen samples."""
    from conftest import run_step

    labels = _jsonl(tmp_path / "labels.jsonl", _labelled(384, seed=1))
    summary = train(load_train_config("scorer", data={
        "model": str(tiny_models["scorer-complexity"]), "data": [labels], "output": str(tmp_path / "scorer"),
        "kind": "complexity", "num_workers": 2, "global_batch_size": 16, "per_device_batch_size": 8, "epochs": 6,
        "learning_rate": 3e-3, "warmup_ratio": 0.05, "max_length": 256, "save_every_epoch": False}), log=lambda *_: None)
    assert summary["rows"]["rows_used"] == 384
    held_out = _labelled(80, seed=2)
    pool = _jsonl(tmp_path / "pool.jsonl", [{"id": f"h{i}", "conversations": [
        {"from": "human", "value": r["instruction"]}, {"from": "gpt", "value": "ok"}]} for i, r in enumerate(held_out)])
    run_step("score", inputs=[pool], output=str(tmp_path / "scored"),
             complexity_model=str(tmp_path / "scorer" / "model"), quality_model=str(tiny_models["scorer-quality"]))
    import pyarrow.parquet as pq

    scored = {r["id"]: r["complexity_scores"][0] for r in pq.read_table(str(tmp_path / "scored" / "scored")).to_pylist()}
    predicted = np.array([scored[f"h{i}"] for i in range(len(held_out))])
    truth = np.array([r["score"] for r in held_out])
    rank = lambda x: np.argsort(np.argsort(x, kind="stable"), kind="stable")  # noqa: E731
    spearman = np.corrcoef(rank(predicted), rank(truth))[0, 1]
    assert spearman > 0.6, (spearman, list(zip(truth, predicted.round(2))))
