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
    gpus: float


def local_cpus(num_cpus: int | None = None) -> int:
    return num_cpus or max(4, os.cpu_count() or 1)


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or None)
    else:
        ray.init(num_cpus=local_cpus(num_cpus))


def is_local_ray(address: str | None = None) -> bool:
    """A Ray on this machine that this run may size freely (not a shared cluster)."""
    if address or os.environ.get("RAY_ADDRESS"):
        return False
    import ray

    return len([n for n in ray.nodes() if n.get("Alive")]) <= 1


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
