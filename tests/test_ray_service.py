"""The service on Ray (serve --ray / --lanes): the existing round-trip tests, run again.

The `served` fixture of test_service.py is replaced by one whose app hands
every evaluation to Ray (embedded, 2 CPUs), twice over: lane 1 of each
evaluation on a lane actor (serve --lanes 2), and each whole evaluation on a
sentence actor with its refreshes relayed (serve --ray); the tests themselves
are imported unchanged.
"""

import pytest


from test_service import (  # noqa: F401  (fixtures and tests, collected again here)
    T, student, test_health_signature_and_openapi, test_key_files_are_owner_only_and_reload,
    test_text_round_trip_matches_plain_and_nothing_secret_travels,
)

from he_inhibitor.circuit.ray_lanes import RayLanes, lanes_of
from he_inhibitor.circuit.ray_sentences import RaySentences
from he_inhibitor.service.local import LocalServer
from he_inhibitor.service.server import create_app


@pytest.fixture(scope="module", params=["lanes", "sentences"])
def served(student, request):  # noqa: F811
    _, plan, _, _ = student
    assert lanes_of(plan.plan_for(T).compiled.circuit) == [0, 1]
    with (RayLanes(1) if request.param == "lanes" else RaySentences(2, weight_cache=0)) as pool:
        app = create_app(plan, plan.params, lanes=pool)
        app.state.lane_pool = pool
        with LocalServer(app) as server:
            yield app, server


def test_lane_work_ran_on_ray_with_keys_sent_once(served, student):
    from he_inhibitor.service.client import Client

    app, server = served
    _, _, embedder, _ = student
    pool = app.state.lane_pool
    work = "evaluations" if isinstance(pool, RaySentences) else "segments_run"
    before = sum(s[work] for s in pool.stats())
    with Client(server.url) as client:
        client.generate_keys()
        for text in ("a very good film", "not fun , dull plot"):
            client.classify(text, embedder)
    stats = pool.stats()
    assert sum(s[work] for s in stats) >= before + 2  # both evaluations (or lane 1 of each) ran on Ray
    assert all(n == 1 for s in stats for n in s["key_loads"].values())  # each key set reached the actor once
