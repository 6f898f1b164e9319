"""`guardrail batch` on a two-node Ray cluster on this one machine (``ray.cluster_utils.Cluster``:
a head and a second node, one CPU each, so that two actors must run on two nodes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guardrail.batch import batch_score
from tests.batch_corpus import RecordsNode, ray_env, required, shard_bytes, write_corpus

ray = required("ray")
cluster_utils = required("ray.cluster_utils")

NODE = {"num_cpus": 1, "object_store_memory": 100 * 1024**2}


@pytest.fixture(scope="module", autouse=True)
def two_nodes() -> Iterator[Any]:
    with ray_env():
        cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
        try:
            cluster.add_node(**NODE)
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, log_to_driver=False)
            yield cluster
        finally:
            ray.shutdown()
            cluster.shutdown()


def test_two_nodes_write_exactly_what_the_local_path_writes(tmp_path: Path) -> None:
    corpus = tmp_path / "responses.jsonl"
    write_corpus(corpus, 240)
    batch_score([str(corpus)], tmp_path / "local", shard_size=30, workers=1, progress=False)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    batch_score(
        [str(corpus)], tmp_path / "ray", shard_size=30, workers=2, ray="auto", worker=RecordsNode, progress=False
    )
    assert shard_bytes(tmp_path / "ray") == shard_bytes(tmp_path / "local")
    nodes = {p.read_text() for p in (tmp_path / "nodes").iterdir()}
    assert len(nodes) == 2  # both nodes scored shards
