"""8 concurrent clients with different keys each get their own correct answer.

Their requests and refresh round trips interleave on one real uvicorn server
(the toy circuit of test_service_errors has a refresh, so every evaluation
pauses in the job table while other clients' evaluations run).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from he_inhibitor.service.client import Client
from he_inhibitor.service.local import LocalServer
from he_inhibitor.service.server import create_app
from test_service_errors import PARAMS, plain_logits, sentence, toy_circuit

CLIENTS = 8


def test_eight_concurrent_clients_with_their_own_keys():
    compiled = toy_circuit()
    app = create_app(compiled, PARAMS)
    with LocalServer(app) as server:
        def one(i: int) -> tuple[str, list[np.ndarray], list[np.ndarray]]:
            with Client(server.url) as client:
                client.generate_keys()
                client.register_keys()
                got, want = [], []
                for j in range(3):
                    x0, n = sentence(100 * i + j, n_tokens=1 + (i + j) % 8)
                    got.append(client.classify_embedded(x0, n).logits)
                    want.append(plain_logits(compiled, x0, n))
                return client.key_id, got, want

        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(one, range(CLIENTS)))
    assert len({kid for kid, _, _ in results}) == CLIENTS  # different keys
    for _, got, want in results:
        np.testing.assert_allclose(np.array(got), np.array(want), atol=1e-3)
    assert len(app.state.jobs) == 0
