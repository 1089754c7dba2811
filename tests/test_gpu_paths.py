"""What a first run on a GPU cluster meets, checked on this CPU machine: GPUs per actor against tensor parallelism,
GPUs left to the default, a driver too old for the CUDA build, the dtype, and `deita-ray doctor`."""

import json
import subprocess
import sys

import pytest

from deita_ray.configlib import ConfigError
from deita_ray.runner.session import ActorRequest, resolve_gpus


def test_tensor_parallelism_and_gpus_per_actor_must_agree_before_ray_starts():
    from deita_ray.configlib import build
    from deita_ray.recipe.config import load_config
    from deita_ray.steps.judge import JudgeConfig
    from deita_ray.steps.score import ScoreConfig

    with pytest.raises(ConfigError, match=r"score: gpus_per_replica \(1\) must equal tensor_parallel_size \(2\)"):
        build(ScoreConfig, {"engine": "vllm", "tensor_parallel_size": 2, "gpus_per_replica": 1}, "score")
    ScoreConfig(engine="vllm", tensor_parallel_size=2, gpus_per_replica=2)
    ScoreConfig(engine="vllm", tensor_parallel_size=2)  # left to the default: 2 on a cluster with GPUs
    with pytest.raises(ConfigError, match=r"judge: gpus_per_replica \(4\) must equal tensor_parallel_size \(8\)"):
        build(JudgeConfig, {"model": "m", "engine": "vllm", "tensor_parallel_size": 8, "gpus_per_replica": 4},
              "judge")
    started = __import__("time").time()
    out = subprocess.run([sys.executable, "-m", "deita_ray.cli", "run", "quickstart", "--set", "score.engine=vllm",
                          "--set", "score.tensor_parallel_size=2", "--set", "score.gpus_per_replica=1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith("deita-ray: error: score: ")
    assert "must equal tensor_parallel_size" in out.stderr and "Started a local Ray" not in out.stderr
    assert __import__("time").time() - started < 60
    with pytest.raises(ConfigError):
        load_config("quickstart", ["embed.engine=vllm", "embed.tensor_parallel_size=2", "embed.gpus_per_replica=1"])


def test_gpus_left_to_the_default():
    vllm = ActorRequest("score", replicas=4, cpus=4, gpus=None, auto_gpus=2)
    hf = ActorRequest("embed", replicas=1, cpus=1, gpus=None, auto_gpus=1)
    assert [r.gpus for r in resolve_gpus([vllm, vllm], cluster_gpus=0)] == [0, 0]      # no GPUs: the CPU
    assert [r.gpus for r in resolve_gpus([vllm, vllm], cluster_gpus=16)] == [2, 2]     # TP GPUs per vLLM actor
    assert [r.gpus for r in resolve_gpus([hf, hf], cluster_gpus=1)] == [0.5, 0.5]      # a laptop's one GPU, shared
    assert [r.gpus for r in resolve_gpus([vllm], cluster_gpus=4)] == [2]               # vLLM does not share: the
    fixed = ActorRequest("score", replicas=2, cpus=1, gpus=0, auto_gpus=1)             # resource check names it
    assert [r.gpus for r in resolve_gpus([fixed, hf], cluster_gpus=8)] == [0, 1]      # 0 stays 0 (GPUs hidden)


def test_a_gpu_given_to_an_actor_that_cannot_use_cuda_is_one_line(monkeypatch):
    from deita_ray.runner import session
    from deita_ray.runner.execute import ray_actor_class
    from deita_ray.stages.score import ScoreStage

    with pytest.raises(RuntimeError, match="ScoreStage was given 1 GPU.* but CUDA is unusable here: torch .* CPU build"):
        ray_actor_class(ScoreStage, gpus=1)("complexity", None)
    import torch

    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(session, "driver_versions", lambda: ("535.104.05", 12020))
    assert session.cuda_mismatch().startswith("the NVIDIA driver 535.104.05 supports CUDA 12.2, but torch ")
    assert "is built for CUDA 13.0, which needs driver >= 580" in session.cuda_mismatch()


def test_model_dtype_defaults_to_bfloat16_on_gpus_and_float32_on_cpus():
    from deita_ray.engines.config import LLMConfig

    config = LLMConfig(model="m")
    assert (config.model_dtype(on_gpu=True), config.model_dtype(on_gpu=False)) == ("bfloat16", "float32")
    assert LLMConfig(model="m", dtype="float16").model_dtype(on_gpu=True) == "float16"


def test_vllm_engine_arguments_for_tensor_parallelism(tiny_models):
    from deita_ray.engines.config import LLMConfig
    from deita_ray.engines.vllm import engine_kwargs

    one = engine_kwargs(LLMConfig(model=str(tiny_models["generator"]), engine="vllm"))
    assert "distributed_executor_backend" not in one and one["dtype"] == "float32"
    four = engine_kwargs(LLMConfig(model=str(tiny_models["generator"]), engine="vllm", tensor_parallel_size=4))
    assert four["distributed_executor_backend"] == "mp"  # not vLLM's Ray executor inside our actor's placement


def test_doctor_on_this_cpu_machine():
    out = subprocess.run([sys.executable, "-m", "deita_ray.cli", "doctor", "--json"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["gpus"] == [] and report["torch"]["cuda_usable"] is False and report["problems"] == []
    assert report["kept_index"]["on_gpu"] is False and report["kept_index"]["why"]
    assert [p["engine"] for p in report["engines"]] == ["hf"] and report["engines"][0]["ok"]
    text = subprocess.run([sys.executable, "-m", "deita_ray.cli", "doctor", "--no-probes"], capture_output=True,
                          text=True, timeout=120).stdout
    assert "kept index   " in text and text.rstrip().endswith("verdict      ready")
