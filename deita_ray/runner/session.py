"""The one policy for starting or joining Ray, and the check that a stage's request can be scheduled.

- `ensure_ray(address)`: join the session already up in this process, else the cluster named by
  `address` or RAY_ADDRESS (`ray job submit` sets it), else start a local Ray with logical CPUs
  above the core count (max(4, cores)), so fractional actors and read tasks fit on a laptop.
- `fit_actors(stage, actors, task_ops)`: before a stage starts, compare what it asks for (actors x
  CPUs/GPUs, plus CPU for its read/write tasks) with what the cluster has. On a local Ray, CPUs
  per actor are scaled down to fit, with one line saying so; on a cluster, or for GPUs anywhere, a
  request that cannot be scheduled stops the run at once with one line naming the options to change.
  Ray Data would otherwise wait forever, backpressured, printing nothing useful.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace

TASK_CPUS = 0.25   # what each Ray Data task operator (read, finish/write) asks for


class ResourceError(RuntimeError):
    """A stage asks for more than the cluster has."""


@dataclass(frozen=True)
class ActorRequest:
    option: str        # the config key prefix users change, e.g. "score" (score.replicas, ...)
    replicas: int
    cpus: float
    gpus: float | None          # None: auto (see resolve_gpus)
    auto_gpus: float = 0.0      # what auto means for this engine on a cluster with GPUs


def local_cpus(num_cpus: int | None = None) -> int:
    return num_cpus or max(4, os.cpu_count() or 1)


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or None)
        return
    # A local Ray of our own. Ray's processes that look the cluster up by themselves (Ray Train's placement
    # group cleaner asks the State API, with no address) would find every Ray on this host and fail when
    # there are several: so the dashboard (the State API's server) gets a port chosen here, and its address
    # goes into the environment that the Ray processes started now inherit.
    port = _free_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    # Ray 2.60 turns token authentication on for a local Ray and says so in a warning each time; on is what we want,
    # so the warning is no news (RAY_AUTH_MODE cannot be set here instead: Ray reads it when it is imported).
    from deita_ray.runner.quiet import drop_log_lines

    drop_log_lines("ray._private.authentication.authentication_token_setup", "Token authentication is enabled")
    ray.init(num_cpus=local_cpus(num_cpus), include_dashboard=True, dashboard_port=port)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_local_ray(address: str | None = None) -> bool:
    """A Ray on this machine that this run may size freely (not a shared cluster)."""
    if address or os.environ.get("RAY_ADDRESS"):
        return False
    import ray

    return len([n for n in ray.nodes() if n.get("Alive")]) <= 1


def resolve_gpus(actors: list[ActorRequest], cluster_gpus: float | None = None) -> list[ActorRequest]:
    """GPUs per actor where the config left them to the default: none on a cluster without GPUs; else each
    engine's own (vLLM: its tensor-parallel size; transformers: one), shared evenly when the cluster has fewer
    GPUs than those actors ask for and they can share (transformers can; vLLM cannot: its request stands and
    the resource check names it)."""
    if cluster_gpus is None:
        import ray

        cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
    auto = [a for a in actors if a.gpus is None]
    if not cluster_gpus:
        return [replace(a, gpus=0.0) if a.gpus is None else a for a in actors]
    wanted = sum(a.replicas * a.auto_gpus for a in auto)
    fixed = sum(a.replicas * a.gpus for a in actors if a.gpus is not None)
    room = max(cluster_gpus - fixed, 0.0)
    shareable = all(a.auto_gpus <= 1 for a in auto)
    scale = room / wanted if wanted > room and shareable and room > 0 else 1.0
    return [replace(a, gpus=int(a.auto_gpus * scale * 100) / 100) if a.gpus is None else a for a in actors]


def check_cuda_usable(what: str) -> None:
    """GPUs were given and CUDA cannot use them (a driver too old for this CUDA build): one line that says so,
    with the versions, instead of a quiet run on the CPU defaults (or a vLLM that cannot start)."""
    import torch

    if torch.cuda.is_available():
        return
    raise RuntimeError(f"{what} but CUDA is unusable here: {cuda_mismatch()}")


def driver_versions() -> tuple[str | None, int | None]:
    """(NVIDIA driver version, the CUDA version it supports as 1000*major + 10*minor), read through the driver's own
    libraries (NVML, libcuda) so that no CUDA context is made; (None, None) where there is no NVIDIA driver."""
    import ctypes

    driver = cuda = None
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
        if nvml.nvmlInit_v2() == 0:
            buffer = ctypes.create_string_buffer(96)
            if nvml.nvmlSystemGetDriverVersion(buffer, 96) == 0:
                driver = buffer.value.decode()
    except OSError:
        pass
    try:
        value = ctypes.c_int()
        if ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(value)) == 0:
            cuda = value.value
    except OSError:
        pass
    return driver, cuda


def cuda_mismatch() -> str:
    """Why torch's CUDA build and this machine's driver do not go together, in words and versions."""
    import torch

    driver, cuda = driver_versions()
    built = torch.version.cuda
    if built is None:
        return f"torch {torch.__version__} is a CPU build (install a CUDA build of torch on GPU nodes)"
    if driver is None and cuda is None:
        return f"no NVIDIA driver was found (torch {torch.__version__} is built for CUDA {built})"
    needs = "580" if built.startswith("13") else "525" if built.startswith("12") else "the one its CUDA needs"
    supports = f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else "?"
    return (f"the NVIDIA driver {driver or '?'} supports CUDA {supports}, but torch {torch.__version__} is built for "
            f"CUDA {built}, which needs driver >= {needs} (or a torch built for the driver's CUDA)")


def fit_actors(stage: str, actors: list[ActorRequest], task_ops: int, local: bool,
               cluster: dict | None = None, log=None, largest_node: dict | None = None) -> list[ActorRequest]:
    """The actor requests, scaled to fit a local Ray, or ResourceError naming the options to change.
    `largest_node`: the most CPUs and GPUs any one node has (an actor cannot span nodes)."""
    if cluster is None:
        import ray

        cluster = ray.cluster_resources()
        alive = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        largest_node = {key: max((n.get(key, 0) for n in alive), default=0) for key in ("CPU", "GPU")}
    for a in actors:
        if largest_node and a.gpus > float(largest_node.get("GPU", 0)) + 1e-9 and a.gpus <= float(cluster.get("GPU", 0)):
            raise ResourceError(f"{stage} asks for {a.gpus:g} GPUs per actor but no node has more than "
                                f"{largest_node.get('GPU', 0):g}: lower {a.option}.gpus_per_replica")
        if largest_node and not local and a.cpus > float(largest_node.get("CPU", 0)) + 1e-9:
            raise ResourceError(f"{stage} asks for {a.cpus:g} CPUs per actor but no node has more than "
                                f"{largest_node.get('CPU', 0):g}: lower {a.option}.cpus_per_replica")
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    have_cpus, have_gpus = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    want_gpus = sum(a.replicas * a.gpus for a in actors)
    if want_gpus > have_gpus + 1e-9:
        options = ", ".join(f"{a.option}.replicas / {a.option}.gpus_per_replica" for a in actors if a.gpus)
        raise ResourceError(f"{stage} asks for {want_gpus:g} GPUs but the cluster has {have_gpus:g}: lower {options} "
                            f"(0 runs on CPUs)")
    tasks = task_ops * TASK_CPUS
    want_cpus = sum(a.replicas * a.cpus for a in actors) + tasks
    if want_cpus <= have_cpus + 1e-9:
        return actors
    options = " or ".join(f"{a.option}.replicas / {a.option}.cpus_per_replica" for a in actors)
    if not local:
        raise ResourceError(f"{stage} asks for {want_cpus:g} CPUs ({' + '.join(f'{a.replicas} x {a.cpus:g}' for a in actors)}"
                            f" for actors, {tasks:g} for read/write tasks) but the cluster has {have_cpus:g}: lower {options}")
    room = have_cpus - tasks
    actor_cpus = sum(a.replicas * a.cpus for a in actors)
    if room <= 0 or sum(a.replicas for a in actors) * 0.05 > room:
        raise ResourceError(f"{stage}: {sum(a.replicas for a in actors)} actors cannot fit in {have_cpus:g} CPUs even "
                            f"at 0.05 CPU each: lower {options}")
    scale = room / actor_cpus
    fitted = [replace(a, cpus=max(0.05, int(a.cpus * scale * 100) / 100)) for a in actors]
    log(f"{stage}: {actor_cpus:g} CPUs asked for by actors + {tasks:g} for tasks > {have_cpus:g} on this local Ray; "
        f"sized to {', '.join(f'{a.replicas} x {a.cpus:g}' for a in fitted)} CPUs per actor")
    return fitted


def check_workers(what: str, workers: int, cpus: float, gpus: float, options: str, cluster: dict | None = None,
                  largest_node: dict | None = None) -> None:
    """Training workers (a Ray Train placement group: every worker at once) against the cluster, before Ray Train
    is asked for them: it would otherwise wait for them without end. ResourceError in one line."""
    if cluster is None:
        import ray

        cluster = ray.cluster_resources()
        alive = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        largest_node = {key: max((n.get(key, 0) for n in alive), default=0) for key in ("CPU", "GPU")}
    largest_node = largest_node or cluster
    for key, each in (("GPU", gpus), ("CPU", cpus)):
        have, biggest = float(cluster.get(key, 0)), float(largest_node.get(key, 0))
        if each > biggest + 1e-9:
            raise ResourceError(f"{what} asks for {each:g} {key}s per worker but no node has more than {biggest:g}: "
                                f"change {options}")
        if workers * each > have + 1e-9:
            raise ResourceError(f"{what} asks for {workers} workers x {each:g} {key}s = {workers * each:g} but the "
                                f"cluster has {have:g}: change {options}")
