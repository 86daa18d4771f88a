"""The service with each evaluation's lanes on Ray (serve --ray): the existing round-trip tests, run again.

The `served` fixture of test_service.py is replaced by one whose app hands
lane 1 of every evaluation to a Ray actor (embedded Ray, 2 CPUs); the tests
themselves are imported unchanged.
"""

import pytest

pytest.importorskip("torch")
ray = pytest.importorskip("ray")

from test_service import (  # noqa: E402,F401  (fixtures and tests, collected again here)
    student, test_health_signature_and_openapi, test_key_files_are_owner_only_and_reload,
    test_text_round_trip_matches_plain_and_nothing_secret_travels,
)

from he_inhibitor.circuit.ray_lanes import RayLanes, lanes_of  # noqa: E402
from he_inhibitor.service.local import LocalServer  # noqa: E402
from he_inhibitor.service.server import create_app  # noqa: E402


@pytest.fixture(scope="module")
def served(student):  # noqa: F811
    _, plan, _, _ = student
    assert lanes_of(plan.compiled.circuit) == [0, 1]
    with RayLanes(1) as pool:
        app = create_app(plan.compiled, plan.params, lanes=pool)
        app.state.lane_pool = pool
        with LocalServer(app) as server:
            yield app, server


def test_lane_work_ran_on_ray_with_keys_sent_once(served, student):
    from he_inhibitor.service.client import Client

    app, server = served
    _, _, embedder, _ = student
    pool = app.state.lane_pool
    before = sum(s["segments_run"] for s in pool.stats())
    with Client(server.url) as client:
        client.generate_keys()
        for text in ("a very good film", "not fun , dull plot"):
            client.classify(text, embedder)
    stats = pool.stats()
    assert sum(s["segments_run"] for s in stats) >= before + 2  # lane 1 of both evaluations ran on the actor
    assert all(n == 1 for s in stats for n in s["key_loads"].values())  # each key set reached the actor once
