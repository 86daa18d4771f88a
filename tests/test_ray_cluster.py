"""A local multi-node Ray cluster (two raylets, one CPU each, on this machine): predict with 3 lanes on it
puts one lane actor on each node, so ciphertexts, keys and circuit cross between nodes' object stores."""

import pytest

import ray
from ray import cluster_utils

from test_ray_lanes import cli_bundle  # noqa: F401


@pytest.mark.slow
def test_predict_on_a_two_node_cluster(cli_bundle, monkeypatch):  # noqa: F811
    from test_circuit_cli import LONG

    from he_inhibitor.circuit.predict import Predictor
    from he_inhibitor.circuit.ray_lanes import start_ray

    assert not ray.is_initialized()
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "object_store_memory": 150 * 2**20})
    try:
        cluster.add_node(num_cpus=1, object_store_memory=150 * 2**20)
        cluster.wait_for_nodes()
        start_ray(cluster.address)  # the driver joins as a client of the cluster, as predict --ray would
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        with Predictor(cli_bundle, "encrypted", lanes=3, ray=cluster.address) as p:
            r = p.predict(LONG)
            stats = p._pool.stats()
        assert r["lanes"] == min(3, r["plan"]["shifts"] if r.get("plan") else 3) > 1 and r["ray_workers"] == 2
        assert r["levels_used"] == r["depth"] and 0 < r["max_abs_error"] <= r["predicted_error_bound"]
        # one lane actor per node (each asks for the one CPU its node has), both ran, keys loaded once each
        assert len({s["node"] for s in stats}) == 2 and all(s["segments_run"] > 0 for s in stats)
        assert all(list(s["key_loads"].values()) == [1] for s in stats)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
