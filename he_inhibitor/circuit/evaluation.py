"""The server's half of an encrypted evaluation: a compiled circuit, a PublicContext, no secret key.

`CircuitEvaluator.run` walks the circuit with the one traversal
(interpret.py) on the SEAL backend (`encrypted.SealBackend`: the same per-op
semantics and weight encoding as the in-process executor, so server and
in-process results are the same computation), with public keys only. Each
refresh round trip the walk reaches is relayed to the client: the generator
yields a `Refresh` (masked ciphertexts and the public maps the client
applies to them, arrange.py), receives the client's fresh encryptions of
the maps' outputs, unmasks them and resumes the walk; it returns the output
ciphertexts. A bucket's sentences run the circuit of their length's
attention plan (bundle.Bucket). `before` runs ahead of every node: the
server stops a cancelled request there (service/cancel.py). The HTTP server
(service/server.py) and the Ray sentence workers (ray_sentences.py) run it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from he_inhibitor.ckks import Ciphertext, CkksEvaluator, CkksParams, PublicContext, sealio
from he_inhibitor.circuit.arrange import ShiftPlan
from he_inhibitor.circuit.bundle import Bucket
from he_inhibitor.circuit.compile import Compiled
from he_inhibitor.circuit.encrypted import EncryptedExecutor
from he_inhibitor.circuit.executors import Mode, make_executor
from he_inhibitor.circuit.interpret import Answer, RefreshPoint, relayed
from he_inhibitor.circuit.refresh import Refresh, masked
from he_inhibitor.circuit.weight_store import WeightStore


Evaluation = Generator[Refresh, list[Ciphertext], dict[str, Ciphertext]]


class CircuitEvaluator:
    """One client's evaluation keys bound to a bucket's circuits (one per attention plan, made when a
    sentence first needs it).

    The plaintexts that depend on no key (weights, key masks) are kept in
    `weights`, a store the whole process shares (the HTTP server's, a Ray
    sentence worker's; weight_store.py), so a key set costs no memory for
    them; without one they are encoded per request.
    """

    def __init__(self, bucket: Bucket | Compiled, params: CkksParams, public: PublicContext, lanes: Any = None,
                 before: Callable[[], None] | None = None, weights: WeightStore | None = None) -> None:
        self.before, self._weights = before, weights
        self.bucket = Bucket.of(bucket, params) if isinstance(bucket, Compiled) else bucket
        self.params = params
        self.public = public
        self._ev = CkksEvaluator(public)
        self._rng = np.random.default_rng()  # OS entropy: the client must not predict the masks
        self._executors: dict[ShiftPlan | None, EncryptedExecutor] = {}
        # serve --ray: lanes 1..K-1 of each evaluation on Ray actors (circuit/ray_lanes.py, a RayLanes pool),
        # or the whole evaluation on a Ray actor (circuit/ray_sentences.py, a RaySentences pool)
        self._lanes = lanes
        if lanes is not None:
            self._lane_blob = lambda: public.to_bytes()  # rebuilt only if the pool dropped the keys
            self._lane_key = lanes.register_keys(self._lane_blob())

    def compiled_for(self, n_tokens: int) -> Compiled:
        return self.bucket.plan_for(n_tokens).compiled

    def _executor(self, compiled: Compiled) -> EncryptedExecutor:
        if compiled.plan not in self._executors:
            self._executors[compiled.plan] = make_executor(Mode.ENCRYPTED, compiled, self.params, public=self.public,
                                                           cache=self._weights is not None, weights=self._weights)
        return self._executors[compiled.plan]

    def run(self, inputs: list[Ciphertext], n_tokens: int) -> Evaluation:
        """Evaluate on ciphertexts in the order of the signature's input names for n_tokens;
        yields one Refresh per round trip."""
        comp = self.compiled_for(n_tokens)
        m = (np.arange(comp.T) < n_tokens).astype(np.float64)
        if hasattr(self._lanes, "evaluation"):  # the whole evaluation on a Ray actor, refreshes relayed
            return (yield from self._lanes.evaluation(self._lanes.register(comp, self.params), self._lane_key,
                                                      self._lane_blob, [sealio.to_bytes(c) for c in inputs],
                                                      n_tokens, self.public.context))
        public = comp.public_plaintexts(m)
        link = None if self._lanes is None else self._lanes.link(
            self._lanes.register(comp, self.params), self._lane_key, m, self.public.context, self._lane_blob)
        walk = self._executor(comp).evaluation(dict(zip(comp.input_names(), inputs, strict=True)), public, link,
                                               before=self.before)
        return (yield from relayed(walk, lambda point: self._refresh(point, public)))

    def reply_bytes(self, ct: Ciphertext) -> bytes:
        """A ciphertext the client will only decrypt, mod-switched to the last level: fewer limbs, same message."""
        return sealio.to_bytes(self._ev.to_last(ct))

    def _refresh(self, point: RefreshPoint, public: dict) -> Generator[Refresh, list[Ciphertext], Answer]:
        """The server's half of a round trip (refresh.masked), with OS-entropy masks."""
        return (yield from masked(point, public, self._ev, self._rng))