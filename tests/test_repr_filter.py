"""The Repr Filter: exact Deita semantics, and the block-resolved algorithm equal to one-at-a-time for every b."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deita_ray.select import repr_filter, select_diverse, selection_order
from deita_ray.select.exact import exact_above
from deita_ray.select.kept_index import KeptIndex
from deita_ray.select.repr_filter import normalise_rows


def naive_filter(vectors, scores, ids, budget, tau):
    """The reference loop, one candidate at a time, every similarity an exactly rounded fsum."""
    v = normalise_rows(vectors).astype(np.float64)
    tie = list(range(len(scores))) if ids is None else list(ids)
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], tie[i]))
    kept = []
    for i in order:
        if len(kept) == budget:
            break
        if all(math.fsum((v[i] * v[k]).tolist()) <= tau for k in kept):
            kept.append(i)
    return kept


@st.composite
def pools(draw):
    n = draw(st.integers(1, 60))
    d = draw(st.integers(2, 16))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, d)).astype(np.float32)
    for _ in range(draw(st.integers(0, n // 2))):  # planted (near-)duplicates
        a, b = rng.integers(0, n, 2)
        noise = draw(st.sampled_from([0.0, 1e-6, 1e-3, 0.05, 0.3]))
        vectors[a] = vectors[b] + noise * rng.standard_normal(d).astype(np.float32)
    scores = rng.choice(draw(st.sampled_from([[1.0, 2.0], [1.0, 2.0, 3.0, 4.0], list(range(100))])), n).astype(float)
    ids = None if draw(st.booleans()) else [f"id{j:03d}" for j in rng.permutation(n)]
    unit = normalise_rows(vectors).astype(np.float64)
    if n > 1 and draw(st.booleans()):  # tau exactly at, or one ulp around, an observed similarity
        a, b = rng.choice(n, 2, replace=False)
        tau = math.fsum((unit[a] * unit[b]).tolist())
        tau = float(np.nextafter(tau, draw(st.sampled_from([-1.0, 1.0, tau]))))
    else:
        tau = draw(st.floats(-0.5, 1.0))
    budget = draw(st.integers(1, n + 5))  # includes budgets larger than the pool
    return vectors, scores, ids, budget, tau


@pytest.mark.parametrize("backend", ["faiss", "torch", "numpy"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pools(), st.sampled_from([1, 2, 3, 5, 16, 64]))
def test_blocked_filter_equals_one_at_a_time(backend, pool, block_size):
    vectors, scores, ids, budget, tau = pool
    expected = naive_filter(vectors, scores, ids, budget, tau)
    index = KeptIndex(vectors.shape[1], device="cpu", capacity=2, backend=backend)  # capacity 2: growth is exercised
    got = select_diverse(vectors, scores, ids, budget=budget, threshold=tau, block_size=block_size, index=index)
    assert got.tolist() == expected
    assert index.describe()["backend"] == f"{backend}-cpu"


def test_backends_agree_where_similarities_sit_on_tau(monkeypatch):
    """Both backends keep the same ids on a clustered pool where 300 pairs have a similarity equal to tau up to
    float32 rounding, so their decisions fall inside the error band and are taken exactly."""
    from deita_ray.select import kept_index

    rng = np.random.default_rng(5)
    tau = 0.9
    centres = normalise_rows(rng.standard_normal((40, 64)))
    points = normalise_rows(centres[rng.integers(0, 40, 3000)] + 0.05 * rng.standard_normal((3000, 64)))
    a = points[:300].astype(np.float64)
    other = rng.standard_normal((300, 64))
    other -= (other * a).sum(axis=1, keepdims=True) * a  # orthogonal to a
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    partners = normalise_rows(tau * a + math.sqrt(1 - tau * tau) * other)  # sim(a, partner) = tau, rounded
    vectors = np.concatenate([points, partners])
    scores = np.concatenate([rng.random(3000) + 1, rng.random(300)])  # partners come after their a
    exact_calls = []
    monkeypatch.setattr(kept_index, "exact_above", lambda *args: exact_calls.append(1) or exact_above(*args))
    kept = {backend: select_diverse(vectors, scores, budget=2000, threshold=tau, block_size=97,
                                    index=KeptIndex(64, device="cpu", backend=backend)).tolist()
            for backend in ("faiss", "torch", "numpy")}
    assert kept["faiss"] == kept["torch"] == kept["numpy"] == naive_filter(vectors, scores, None, 2000, tau)
    assert len(exact_calls) > 0  # the band was reached


def test_backend_choice_and_refusals(monkeypatch):
    from deita_ray.select import kept_index

    auto = kept_index.choose_backend("auto", "cpu", dim=64)  # on the CPU, the faster of FAISS and numpy, measured
    assert auto.backend in ("faiss", "numpy") and not auto.on_gpu and "GFLOP/s measured: numpy" in auto.why
    assert kept_index.choose_backend("torch", "auto")[:2] == ("torch", False)  # no CUDA here: torch on the CPU
    assert kept_index.choose_backend("numpy", "auto")[:2] == ("numpy", False)
    monkeypatch.setattr(kept_index, "faiss_installed", lambda: False)
    assert kept_index.choose_backend("auto", "auto")[:2] == ("numpy", False)  # a machine without faiss still filters
    with pytest.raises(RuntimeError, match="backend='numpy' runs on the CPU"):
        kept_index.choose_backend("numpy", "gpu")
    with pytest.raises(RuntimeError, match="faiss is not installed"):
        kept_index.choose_backend("faiss", "cpu")
    with pytest.raises(RuntimeError, match="torch sees no CUDA device"):
        kept_index.choose_backend("torch", "gpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        kept_index.choose_backend("annoy", "cpu")


@pytest.mark.parametrize("distribution, capability, backend", [
    ("faiss-gpu-cu12", (8, 0), "faiss"),   # A100: sm_80 kernels
    ("faiss-gpu-cu12", (8, 9), "faiss"),   # L4/Ada runs sm_80 code
    ("faiss-gpu-cu12", (9, 0), "torch"),   # H100/H200: no sm_90 kernels, FAISS would abort the process
    ("faiss-gpu-cu12", (12, 0), "torch"),  # Blackwell
    ("faiss-gpu", (9, 0), "faiss"),        # Meta's build: sm_90 SASS
    ("faiss-gpu", (12, 0), "faiss"),       # ... and compute_90 PTX, compiled for newer GPUs by the driver
    ("faiss-gpu", (6, 1), "torch"),        # Pascal: older than any of its code
])
def test_auto_picks_a_backend_that_runs_on_the_gpu_it_finds(distribution, capability, backend):
    """A simulated machine: FAISS's GPU build installed and seeing a GPU of `capability`, torch seeing it too."""
    from functools import partial

    from deita_ray.select import faiss_gpu, kept_index

    verdict = partial(faiss_gpu.faiss_gpu_verdict, distribution=distribution, probe=lambda: pytest.fail("probed"))
    choice = kept_index.choose_backend("auto", "auto", faiss_gpu=True, torch_gpu=True, capability=capability,
                                       verdict=verdict)
    assert (choice.backend, choice.on_gpu, choice.fallback) == (backend, True, backend == "torch")
    if backend == "torch":  # the one line a fallback prints, and the refusal when FAISS on the GPU is asked for
        assert f"compute capability {capability[0]}.{capability[1]}" in choice.why
        with pytest.raises(RuntimeError, match="backend='faiss' with device='gpu', but .*carries kernels for"):
            kept_index.choose_backend("faiss", "gpu", faiss_gpu=True, torch_gpu=True, capability=capability,
                                      verdict=verdict)
        on_cpu = kept_index.choose_backend("auto", "auto", faiss_gpu=True, torch_gpu=False, capability=capability,
                                           verdict=verdict)
        assert on_cpu.backend in ("faiss", "numpy") and not on_cpu.on_gpu and on_cpu.fallback


def test_an_unknown_faiss_gpu_build_is_probed_in_a_subprocess():
    from deita_ray.select import faiss_gpu

    ok, why = faiss_gpu.faiss_gpu_verdict((9, 0), distribution="faiss-from-conda", probe=faiss_gpu.probe_in_subprocess)
    assert not ok and "failed in a subprocess" in why  # faiss-cpu here: StandardGpuResources does not exist
    assert faiss_gpu.faiss_distribution() == "faiss-cpu"


def test_first_candidate_is_always_kept_and_rejection_is_strict():
    v = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    scores = np.array([1.0, 3.0, 2.0])
    # tau = 1.0: identical vectors have similarity exactly 1.0, which is not > 1.0, so both are kept.
    assert select_diverse(v, scores, budget=10, threshold=1.0).tolist() == [1, 2, 0]
    assert select_diverse(v, scores, budget=10, threshold=0.99).tolist() == [1, 2]
    assert select_diverse(v, scores, budget=10, threshold=-1.0).tolist() == [1]  # first one always kept


def test_ties_break_by_id_then_position():
    v = np.eye(4, dtype=np.float32)
    scores = np.array([5.0, 5.0, 5.0, 1.0])
    assert select_diverse(v, scores, budget=4).tolist() == [0, 1, 2, 3]
    assert select_diverse(v, scores, ids=["c", "a", "b", "z"], budget=4).tolist() == [1, 2, 0, 3]
    assert selection_order(scores, ["c", "a", "b", "z"]).tolist() == [1, 2, 0, 3]


def test_budget_stops_and_pool_exhaustion_returns_fewer():
    rng = np.random.default_rng(1)
    v = rng.standard_normal((50, 32)).astype(np.float32)
    scores = rng.random(50)
    assert len(select_diverse(v, scores, budget=10, threshold=0.9)) == 10
    many = select_diverse(np.repeat(v[:3], 10, axis=0), np.arange(30.0), budget=100, threshold=0.9)
    assert len(many) == 3  # 30 candidates, 3 distinct directions


def test_rejection_log_names_the_nearest_kept_sample():
    v = np.array([[1, 0, 0], [0.99, 0.1, 0], [0, 1, 0], [0, 0.98, 0.2]], dtype=np.float32)
    result = repr_filter(v, np.array([4.0, 3.0, 2.0, 1.0]), budget=10, threshold=0.9, block_size=2)
    assert result.kept == [0, 2]
    assert result.rejected == [1, 3] and result.rejected_nearest == [0, 2]
    assert all(s > 0.9 for s in result.rejected_similarity)
    assert result.visited == 4


def test_nan_scores_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        select_diverse(np.eye(2, dtype=np.float32), np.array([1.0, np.nan]), budget=1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pools(), st.sampled_from([1, 3, 16, 64]))
def test_every_visit_records_its_nearest_kept_sample_whatever_the_blocks(pool, block_size):
    """The similarity a visit records is to the nearest sample kept when it was visited, whether that one was kept
    in an earlier block or earlier in the same block: the same for any block size, as the one-at-a-time loop
    gives (what the report's similarity plot shows for every visited candidate)."""
    vectors, scores, ids, budget, tau = pool
    blocked = repr_filter(vectors, scores, ids, budget=budget, threshold=tau, block_size=block_size)
    v = normalise_rows(vectors).astype(np.float64)
    order, kept, expected = selection_order(scores, ids), [], []
    for i in order[:blocked.visited]:
        expected.append(max((float(v[i] @ v[k]) for k in kept), default=-np.inf))
        if blocked.visit_accepted[len(expected) - 1]:
            kept.append(i)
    got = np.asarray(blocked.visit_similarity, dtype=np.float64)
    first = np.isneginf(expected)  # nothing kept yet: no similarity to speak of
    assert np.all(~np.isfinite(got[first]) | (got[first] < -1.5))
    np.testing.assert_allclose(got[~first], np.asarray(expected)[~first], atol=1e-5)
