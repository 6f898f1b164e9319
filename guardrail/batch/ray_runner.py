"""The Ray runner: shards scored by a pool of Ray actors with Ray Data's ``map_batches``.

The shards become a Ray Data dataset (one block each) mapped by ``ShardScorer`` as a callable
class: Ray Data keeps ``actors`` actors alive (``ActorPoolStrategy(size=actors)``, what
``concurrency=actors`` said before Ray 2.51), each loading the model once, and
hands every actor one shard per call (``batch_size=1``). An actor that dies is restarted and its
shard retried (``max_restarts`` / ``max_task_retries``); a shard is written only whole, so a retry
neither loses nor duplicates rows. Workers read inputs and write shards at the same paths as the
driver: on a cluster of several machines those paths must be on a file system every node shares.
Ray is imported only here, so everything else runs without it.
"""

from __future__ import annotations

import contextlib
import inspect
import socket
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from guardrail.batch.inputs import BatchError
from guardrail.batch.shards import Shard, ShardResult
from guardrail.batch.worker import JobSpec, ShardScorer


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise BatchError("--ray needs Ray: pip install 'value-guardrail[ray]'") from None
    return ray


def _check_reachable(address: str) -> None:
    """Refuse an address nothing listens on at once: Ray itself would keep retrying for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        host, port = address.removeprefix("ray://"), "6379"  # Ray's default port
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise BatchError(
            f"--ray {address}: nothing answers at {host}:{port} ({exc.strerror or exc}); start the cluster "
            "(`ray start --head`) or give its address"
        ) from None


@contextlib.contextmanager
def ray_session(address: str = "auto") -> Iterator[None]:
    """Connected to the Ray cluster at ``address`` ("auto": the one running on this machine, else a new
    local instance) for the block; disconnected after it unless the process was connected before."""
    ray = _ray()
    if ray.is_initialized():
        yield
        return
    if address != "auto":
        _check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=False)
    except ConnectionError as exc:
        if address != "auto":
            raise BatchError(f"--ray {address}: cannot connect to a Ray cluster there ({exc})") from None
        print("no running Ray cluster found: starting a local Ray instance", file=sys.stderr, flush=True)
        ray.init(log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _retry_args(dataset: Any, retries: int) -> dict[str, int]:
    """Bounded restarts and retries where ``map_batches`` still takes Ray's remote args (deprecated in
    Ray 2.60 with no named replacement); without them Ray Data restarts and retries without bound."""
    if not any(p.kind is p.VAR_KEYWORD for p in inspect.signature(dataset.map_batches).parameters.values()):
        return {}
    return {"max_restarts": retries, "max_task_retries": retries}


def run_ray(
    job: JobSpec,
    shards: Sequence[Shard],
    actors: int = 1,
    *,
    address: str = "auto",
    worker: type[ShardScorer] = ShardScorer,
    cpus_per_actor: float = 1.0,
    retries: int = 3,
    progress: bool = True,
) -> Iterator[ShardResult]:
    """Score ``shards`` on ``actors`` Ray actors; yields each shard's result as it finishes (in any order).

    ``worker`` is the callable class each actor runs (``ShardScorer`` or a subclass). ``retries``
    bounds both the restarts of a dead actor and the retries of its shard.
    """
    if actors < 1:
        raise BatchError(f"actors must be 1 or more, got {actors}")
    if not shards:
        return
    ray = _ray()
    with ray_session(address):
        ray.data.DataContext.get_current().enable_progress_bars = progress
        items = [{"shard": s.model_dump_json()} for s in shards]
        dataset = ray.data.from_items(items, override_num_blocks=len(items))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            scored = dataset.map_batches(
                worker,
                fn_constructor_kwargs={"job": job.model_dump_json()},
                batch_size=1,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=min(actors, len(items))),
                num_cpus=cpus_per_actor,
                **_retry_args(dataset, retries),
            )
        for row in scored.iter_rows():
            yield ShardResult.model_validate_json(str(row["result"]))
