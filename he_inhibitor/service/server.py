"""The evaluation server (FastAPI + uvicorn) and `he-inhibitor serve`: every token bucket, every resource bounded.

It holds the compiled circuits (one per token bucket) and, per client, only
public evaluation keys; it never sees a secret key or a plaintext. What a
request may cost is decided before the cost is paid:
- bodies are read as they arrive (body.py) under a cap derived from the
  circuit, at most `max_uploads` at once, charged to the memory budget while
  held, and parsed from their first bytes (validate.py), so a wrong magic,
  header or part count is refused before the rest is read;
- key sets and evaluations are charged what they hold in memory
  (registry.py) against `--memory-budget`; evaluations are admitted (job
  counts, per-key and per-token quotas, rates) before their body is read;
- the plaintexts that depend on no key (weights, key masks) are encoded once
  into one store for all key sets, bounded by `--weight-cache` bytes
  (circuit/weight_store.py): the server's own memory, like a loaded model;
- SEAL work runs in a small pool (`max_concurrent` threads) behind a queue of
  `max_queue`; beyond it the answer is 503 with Retry-After at once. The
  handlers themselves are async and only wait, so /v1/health answers while
  every worker is busy (within one SEAL operation: SEAL holds the GIL while
  an operation runs);
- a client that disconnects cancels its evaluation between two operations
  (cancel.py) and its job is dropped; request heads must arrive within
  `header_timeout_s` (uvicorn has no such timeout; `_HeadTimeoutH11`).
Every refusal is a typed 4xx (or 503 with Retry-After); nothing a client
sends should produce a 5xx.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import h11
import uvicorn
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from uvicorn.protocols.http.h11_impl import H11Protocol

from he_inhibitor.ckks import Ciphertext, CkksParams, make_context
from he_inhibitor.ckks.context import level_scales
from he_inhibitor.circuit.bundle import Bucket, buckets_of, load_bucket
from he_inhibitor.circuit.compile import Compiled
from he_inhibitor.circuit.evaluation import CircuitEvaluator
from he_inhibitor.circuit.ir import Circuit, OpKind
from he_inhibitor.circuit.ray_lanes import ray_buckets
from he_inhibitor.circuit.ray_sentences import RaySentences
from he_inhibitor.circuit.interpret import last_uses
from he_inhibitor.circuit.weight_store import WeightStore
from he_inhibitor.service.artifacts import SHIPPED_CIRCUIT
from he_inhibitor.service.auth import Principal, Tokens
from he_inhibitor.service.body import BodyReader
from he_inhibitor.service.cancel import Cancelled, checkpoint, scope
from he_inhibitor.service.signature import signature_of
from he_inhibitor.service.protocol import (
    CONTENT_TYPE, H_JOB, H_KEY_ID, H_MAP, H_OUTPUTS, H_SERVER_SECONDS, H_STATUS, H_TOKENS, STATUS_DONE, STATUS_REFRESH, Limits,
    ServiceSignature, ciphertext_bytes, key_switch_bytes, key_switch_wire_bound, pack_frames,
)
from he_inhibitor.service.registry import (
    Job, JobTable, KeyRegistry, KeySet, MemoryBudget, OverQuota, RateLimit, Reservation,
)
from he_inhibitor.service.validate import (
    MAX_HEADER_BYTES, Busy, ContextParts, Mismatch, RequestError, TooLarge, UnknownJob, check_ciphertexts,
    check_tokens, load_context, read_context, read_frames,
)

DEFAULT_LABELS = ("negative", "positive")  # SST-2
_BINARY = {"content": {CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}}}
_ERRORS = {s: {"description": d} for s, d in (
    (400, "malformed body or headers"), (401, "missing or unknown bearer token (servers started with --tokens)"),
    (403, "the context carries a secret key (refused, not stored)"), (404, "unknown key id or job"),
    (408, "the body did not arrive in time"), (413, "body over the size limit"),
    (415, "body is not application/octet-stream"), (422, "parameters, levels or scales do not match the circuit"),
    (429, "over a per-key or per-token quota (Retry-After)"), (503, "server full: retry after Retry-After seconds"))}
_R = TypeVar("_R")


class UnsupportedMedia(RequestError):
    status = 415
    code = "unsupported_media_type"


class ClientGone(RequestError):
    """The client disconnected while its request waited or ran; nobody reads this answer.

    `started`: whether the work had begun (then the worker stops it at its next
    operation and settles its job; otherwise nothing ran).
    """

    status = 499
    code = "client_closed_request"

    def __init__(self, message: str, started: bool) -> None:
        super().__init__(message)
        self.started = started


def peak_live_ciphertexts(bucket: Bucket) -> int:
    """Most ciphertexts alive at once while a bucket's circuits run (inputs included, constants not).

    Counted on the circuit that holds the longest sentences and scaled by the widest plan's arranged
    ciphertexts per attention tensor (compiling every plan to count would cost seconds each)."""
    comp = bucket.plan_for(max(bucket.plans)).compiled
    widest = max((-(-p.B * comp.layout.d // comp.layout.n_slots) for p in bucket.plans.values() if p is not None),
                 default=1)
    base = 1 if comp.plan is None else -(-comp.plan.B * comp.layout.d // comp.layout.n_slots)
    return -(-_peak(comp.circuit) * widest // base)


def _peak(circuit: Circuit) -> int:
    drops = last_uses(circuit)
    live: set[int] = set()
    peak = 0
    for i, node in enumerate(circuit.nodes):
        if node.op is not OpKind.CONST:
            live.add(i)
        peak = max(peak, len(live))
        live.difference_update(drops[i])
    return peak


def key_set_bytes(sig: ServiceSignature) -> int:
    """Memory a registered key set costs: a relinearization key and one Galois key per step, as SEAL holds them."""
    return (1 + len(sig.rotation_steps)) * key_switch_bytes(sig.params)


class SealPool:
    """A few threads for SEAL work and a bounded queue in front of them: a request beyond it gets 503 at once.

    `run` waits for the work while watching the connection: if the client
    disconnects, queued work is cancelled and running work is told to stop
    (its `cancel` event); the caller gets ClientGone.
    """

    def __init__(self, workers: int, queue: int, retry_after_s: int) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="seal")
        self._capacity, self._retry_after_s = workers + queue, retry_after_s
        self.pending = 0
        self._lock = threading.Lock()

    def _done(self, _: Future) -> None:
        with self._lock:
            self.pending -= 1

    async def run(self, request: Request, cancel: threading.Event, fn: Callable[..., _R], *args: Any,
                  admitted: bool = False) -> _R:
        """`admitted`: the next step of an evaluation already admitted (bounded by max_jobs), never refused."""
        with self._lock:
            if self.pending >= self._capacity and not admitted:
                raise Busy(f"{self._capacity} requests are already waiting for or running SEAL work")
            self.pending += 1
        fut = self._pool.submit(fn, *args)
        fut.add_done_callback(self._done)
        work = asyncio.wrap_future(fut)
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not work.done():
            cancel.set()
            work.add_done_callback(_retrieve)  # its Cancelled (or result) is nobody's answer any more
            raise ClientGone("the client disconnected", started=not fut.cancel())
        return work.result()


def _retrieve(done: asyncio.Future) -> None:
    """Consume an abandoned work's outcome, so that asyncio does not log it as never retrieved."""
    if not done.cancelled():
        done.exception()


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body must have been read before)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class _HeadTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for each request head.

    uvicorn times out idle keep-alive connections but not a head that arrives
    a byte at a time, so 300 slow clients could hold 300 connections for ever.
    While the peer is between requests (h11 state IDLE) and sending bytes, a
    timer runs; if the head is still incomplete when it fires, the connection
    is closed.
    """

    head_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timeout)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            self._arm()
        else:
            self._disarm()

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def server_config(app: FastAPI, **kwargs: Any) -> uvicorn.Config:
    """uvicorn settings for an app made by create_app: connection cap, head and keep-alive timeouts."""
    limits: Limits = app.state.limits
    protocol = type("HeadTimeoutH11", (_HeadTimeoutH11,), {"head_timeout_s": limits.header_timeout_s})
    return uvicorn.Config(app, http=protocol, limit_concurrency=limits.max_connections, timeout_keep_alive=5,
                          h11_max_incomplete_event_size=16 << 10, **kwargs)


def create_app(circuits: Compiled | Bucket | Mapping[int, Compiled | Bucket], params: CkksParams,
               labels: tuple[str, ...] = DEFAULT_LABELS, limits: Limits = Limits(),
               tokens: Tokens | None = None, lanes: Any = None) -> FastAPI:
    """A server for one compiled circuit, or one per token bucket ({T: Compiled}), under `params`.

    lanes: a circuit.ray_lanes.RayLanes pool (serve --lanes K): each evaluation's lanes 1..K-1 run on it;
    or a circuit.ray_sentences.RaySentences pool (serve --ray ADDRESS): each whole evaluation runs on it.
    """
    given = dict(circuits) if isinstance(circuits, Mapping) else {circuits.T: circuits}
    by_T = {T: Bucket.of(c, params) if isinstance(c, Compiled) else c for T, c in given.items()}
    sig = ServiceSignature.of([signature_of(c, params, labels) for c in by_T.values()])
    context = make_context(params)  # one SEAL context for every key set and ciphertext
    scales = level_scales(context, params.scale)
    budget = MemoryBudget(limits.memory_budget)
    weights = WeightStore(limits.weight_cache) if limits.weight_cache else None
    registry = KeyRegistry(budget, limits.max_keys)
    jobs = JobTable(registry, limits.max_jobs, limits.job_ttl_s)
    pool = SealPool(limits.max_concurrent, limits.max_queue, limits.retry_after_s)
    job_bytes = {T: (peak_live_ciphertexts(c) + 2) * ciphertext_bytes(params) for T, c in by_T.items()}
    keys_bytes = key_set_bytes(sig)
    context_cap = (8 + 8 + MAX_HEADER_BYTES + 16 + (1 + len(sig.rotation_steps)) * key_switch_wire_bound(params))
    frame_cap = {b.T: b.max_ciphertext_bytes for b in sig.buckets}
    uploads = {"now": 0}

    app = FastAPI(title="he-inhibitor", version="2",
                  description="Encrypted sentiment inference: the server evaluates a CKKS circuit on "
                              "ciphertexts with public evaluation keys only.",
                  docs_url=None if tokens else "/docs", redoc_url=None,
                  openapi_url=None if tokens else "/openapi.json")
    app.state.registry, app.state.jobs, app.state.signature = registry, jobs, sig
    app.state.limits, app.state.budget, app.state.pool, app.state.weights = limits, budget, pool, weights

    @app.exception_handler(RequestError)
    async def _client_error(request: Request, err: RequestError) -> JSONResponse:
        headers = {}
        if isinstance(err, OverQuota):
            headers["Retry-After"] = str(max(1, int(err.retry_after_s)))
        elif err.status == 503:
            headers["Retry-After"] = str(limits.retry_after_s)
        return JSONResponse({"error": err.code, "detail": str(err)}, status_code=err.status, headers=headers)

    def authorize(request: Request) -> Principal | None:
        return None if tokens is None else tokens.check(request.headers.get("authorization"))

    @asynccontextmanager
    async def upload(request: Request, cap: int, admitted: bool = False) -> AsyncIterator[BodyReader]:
        """A body reader under `cap`, one of max_uploads, its bytes charged to the budget while it is open.

        `admitted`: a refresh of an admitted evaluation, whose charge already
        covers this one ciphertext; it is neither counted nor refused, so an
        evaluation once started is never starved by new work.
        """
        if request.headers.get("content-type", "").split(";")[0].strip() != CONTENT_TYPE:
            raise UnsupportedMedia(f"send the body as {CONTENT_TYPE}")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise TooLarge(f"body of {declared} bytes exceeds the limit of {cap}")
        size = int(declared) if declared.isdigit() else cap
        if admitted:
            deadline = time.monotonic() + limits.body_timeout_s + size / limits.min_upload_rate
            yield BodyReader(request.stream(), cap, limits.body_idle_timeout_s, deadline)
            return
        if uploads["now"] >= limits.max_uploads:
            raise Busy(f"{limits.max_uploads} request bodies are being received")
        charge = budget.reserve(size, "a request body")
        uploads["now"] += 1
        try:
            deadline = time.monotonic() + limits.body_timeout_s + size / limits.min_upload_rate
            yield BodyReader(request.stream(), cap, limits.body_idle_timeout_s, deadline)
        finally:
            uploads["now"] -= 1
            charge.release()

    def step(job: Job, fresh: list[Ciphertext] | None, t0: float) -> Response:
        """Run the evaluation to its next refresh (answer: the masked ciphertext) or to its end (pool thread).

        X-Server-Seconds counts from t0, when the ciphertexts started to load.
        The job is finished here on every path but a pause, where it is parked.
        """
        try:
            with scope(job.cancel):
                out = job.evaluation.send(fresh)
            if job.refreshes_left == 0:
                raise RuntimeError("the circuit asked for more refreshes than its signature states")
            job.refreshes_left -= 1
            job.pending = sum(out.outputs)
            body = pack_frames([job.evaluator.reply_bytes(c) for c in out.cts])
        except StopIteration as stop:
            body = pack_frames([job.evaluator.reply_bytes(stop.value[name]) for name in job.bucket.outputs])
            jobs.finish(job)
            return Response(body, media_type=CONTENT_TYPE, headers={
                H_STATUS: STATUS_DONE, H_SERVER_SECONDS: f"{time.perf_counter() - t0:.6f}"})
        except Cancelled:
            jobs.finish(job)
            raise
        except (RuntimeError, ValueError) as err:  # SEAL refused these ciphertexts mid-circuit
            jobs.finish(job)
            raise Mismatch(f"evaluation failed on these ciphertexts: {err}") from err
        if job.cancel.is_set():
            jobs.finish(job)
            raise Cancelled("the client disconnected")
        return Response(body, media_type=CONTENT_TYPE, headers={
            H_STATUS: STATUS_REFRESH, H_JOB: jobs.park(job), H_MAP: ",".join(m or "" for m in out.maps),
            H_OUTPUTS: ",".join(map(str, out.outputs)),
            H_SERVER_SECONDS: f"{time.perf_counter() - t0:.6f}"})

    async def run_step(request: Request, job: Job, work: Callable[[], Response], job_id: str | None) -> Response:
        """`work` in the pool. A first step (job_id None) may be refused (503) and its job is then finished;
        a continuation is never refused. Work that never started is settled here, work that started
        settles its job itself (`step`); a client found gone as its step ended loses its parked job."""
        try:
            response = await pool.run(request, job.cancel, work, admitted=job_id is not None)
        except Busy:
            jobs.finish(job)
            raise
        except ClientGone as gone:
            if not gone.started:
                jobs.finish(job)
            raise
        if response.headers.get(H_JOB) and await request.is_disconnected():  # gone while the step ended
            jobs.finish(jobs.take(response.headers[H_JOB]))
            raise ClientGone("the client disconnected", started=True)
        return response

    @app.get("/v1/health")
    async def health(request: Request) -> dict:
        """Liveness; occupancy too for callers with a token (any caller when the server has no tokens)."""
        try:
            authorize(request)
        except RequestError:
            return {"status": "ok"}
        jobs.purge()
        return {"status": "ok", "keys": len(registry), "key_bytes": registry.nbytes, "paused_jobs": len(jobs),
                "active_jobs": jobs.active, "memory_used": budget.used, "memory_budget": budget.total,
                "charge_per_key_set": keys_bytes, "charge_per_evaluation": {str(T): b for T, b in job_bytes.items()},
                "queued_or_running": pool.pending, "uploads": uploads["now"],
                "weight_cache": None if weights is None else weights.stats()}

    @app.get("/v1/signature")
    async def signature(request: Request) -> dict:
        authorize(request)
        return sig.to_json()

    if tokens is not None:
        @app.get("/openapi.json", include_in_schema=False)
        async def openapi(request: Request) -> dict:
            authorize(request)
            return app.openapi()

        @app.get("/docs", include_in_schema=False)
        async def docs(request: Request) -> HTMLResponse:
            authorize(request)
            return get_swagger_ui_html(openapi_url="/openapi.json", title="he-inhibitor")

    @app.post("/v1/keys", status_code=201, responses=_ERRORS, openapi_extra={"requestBody": _BINARY})
    async def register(request: Request) -> dict:
        """Register a public context (relin + Galois keys for exactly the signature's steps) once; returns its id."""
        principal = authorize(request)
        if principal is not None and registry.owned_by(principal.name) >= principal.key_sets:
            raise OverQuota(f"token {principal.name!r} holds its {principal.key_sets} key sets", limits.job_ttl_s)
        async with upload(request, context_cap) as reader:
            parts = await read_context(reader, sig)
            received = reader.received
            if not registry.touch(parts.key_id):
                charge = budget.reserve(keys_bytes, "a key set")
                try:
                    entry = await pool.run(request, threading.Event(), load_key_set, parts, charge, principal)
                except BaseException:
                    charge.release()
                    raise
                registry.add(entry)
        return {"key_id": parts.key_id, "bytes": received, "rotation_steps": list(sig.rotation_steps)}

    def load_key_set(parts: ContextParts, charge: Reservation, principal: Principal | None) -> KeySet:
        public = load_context(parts, sig, context)
        evaluators = {T: CircuitEvaluator(c, params, public, lanes, before=checkpoint, weights=weights)
                      for T, c in by_T.items()}
        return KeySet(parts.key_id, public, evaluators, charge, None if principal is None else principal.name,
                      RateLimit(limits.evaluations_per_minute))

    @app.post("/v1/evaluate", responses={200: _BINARY, **_ERRORS}, openapi_extra={"requestBody": _BINARY})
    async def evaluate(request: Request) -> Response:
        """Input ciphertexts (one frame per input of the bucket X-Tokens falls in) -> outputs or a refresh."""
        principal = authorize(request)
        n_tokens = check_tokens(request.headers.get(H_TOKENS), sig.max_tokens)
        bucket = sig.bucket(n_tokens)
        keys = registry.checkout(request.headers.get(H_KEY_ID), limits.max_jobs_per_key)
        try:
            keys.rate.take("this key set")
            if principal is not None:
                principal.rate.take(f"token {principal.name!r}")
        except RequestError:
            registry.checkin(keys)
            raise
        jobs.admit(keys, None if principal is None else principal.name, None if principal is None else principal.jobs)
        job = Job(None, keys, bucket, Reservation(budget, 0), None if principal is None else principal.name,  # type: ignore[arg-type]
                  bucket.refreshes_for(n_tokens))
        try:
            job.charge = budget.reserve(job_bytes[bucket.T], "an evaluation")
            n_inputs = len(bucket.input_names(n_tokens))
            async with upload(request, n_inputs * (frame_cap[bucket.T] + 8) + 8) as reader:
                blobs = await read_frames(reader, n_inputs, frame_cap[bucket.T])
        except BaseException:
            jobs.finish(job)
            raise

        def work() -> Response:
            t0 = time.perf_counter()
            try:
                cts = check_ciphertexts(blobs, context, bucket.input_level, scales[bucket.input_level])
            except RequestError:
                jobs.finish(job)
                raise
            job.evaluation = job.evaluator.run(cts, n_tokens)
            return step(job, None, t0)

        return await run_step(request, job, work, None)

    @app.post("/v1/jobs/{job_id}", responses={200: _BINARY, **_ERRORS}, openapi_extra={"requestBody": _BINARY})
    async def refresh(job_id: str, request: Request) -> Response:
        """The client's fresh encryptions of the public map of the masked ciphertexts it was sent (X-Outputs
        of them); continues the evaluation."""
        principal = authorize(request)
        job = jobs.take(job_id)
        if principal is not None and job.owner != principal.name:
            jobs.park(job, job_id)
            raise UnknownJob(f"no evaluation {job_id!r} of this token awaits a refresh")
        try:
            async with upload(request, job.pending * (frame_cap[job.bucket.T] + 8) + 8, admitted=True) as reader:
                blobs = await read_frames(reader, job.pending, frame_cap[job.bucket.T])
        except RequestError:
            jobs.park(job, job_id)  # a bad refresh body does not cost the client its evaluation (nor its deadline)
            raise
        except BaseException:
            jobs.finish(job)
            raise

        def work() -> Response:
            t0 = time.perf_counter()
            try:
                fresh = check_ciphertexts(blobs, context, job.bucket.input_level, scales[job.bucket.input_level])
            except RequestError:
                jobs.park(job, job_id)
                raise
            return step(job, fresh, t0)

        return await run_step(request, job, work, job_id)

    return app


def load_buckets(path: Path | None) -> tuple[dict[int, Bucket], CkksParams]:
    """Every bucket of a compiled bundle (default: the shipped one); each plan's circuit is recompiled and
    hash-checked when a sentence first needs it."""
    bundle = SHIPPED_CIRCUIT if path is None else path
    Ts = buckets_of(bundle)
    if not Ts:
        raise FileNotFoundError(f"{bundle}: no circuit-t<T>.json: not a circuit bundle")
    buckets = {T: load_bucket(bundle, T) for T in Ts}
    params = {b.params for b in buckets.values()}
    if len(params) != 1:
        raise ValueError(f"{bundle}: buckets use different parameters {sorted(map(str, params))}")
    return buckets, params.pop()


def serve(circuit: Path | None, host: str, port: int, limits: Limits = Limits(), tokens: Path | None = None,
          ray: str | None = None, lanes: int = 1) -> None:
    circuits, params = load_buckets(circuit)
    pool = None
    address = None if ray == "local" else ray
    if lanes > 1:  # each evaluation's lanes 1..K-1 on Ray actors: circuit/ray_lanes.py
        circuits, pool = ray_buckets(circuit, circuits, params, lanes, address, limits.weight_cache)
    elif ray is not None:  # each whole evaluation on a Ray actor, refreshes relayed: circuit/ray_sentences.py
        pool = RaySentences(address=address, weight_cache=limits.weight_cache)
    app = create_app(circuits, params, limits=limits, tokens=None if tokens is None else Tokens.load(tokens),
                     lanes=pool)
    try:
        uvicorn.Server(server_config(app, host=host, port=port)).run()
    finally:
        if pool is not None:
            pool.close()


def _bytes(text: str) -> int:
    """'4G', '512M', '300000000' -> bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    try:
        n = int(float(text[:-1]) * units[text[-1].upper()]) if text[-1:].upper() in units else int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"a size like 4G, 512M or a byte count >= 0, not {text!r}")
    return n


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a compiled circuit over HTTP (public evaluation keys only)")
    p.add_argument("--circuit", type=Path, default=None, help="compiled bundle directory (default: the shipped one)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--memory-budget", type=_bytes, default=Limits.memory_budget,
                   help="bytes of client-driven state (key sets as held in memory, evaluations, bodies), e.g. 4G")
    p.add_argument("--max-keys", type=int, default=Limits.max_keys, help="key sets held at once")
    p.add_argument("--weight-cache", type=_bytes, default=Limits.weight_cache,
                   help="bytes of encoded weight and key-mask plaintexts kept for every key set, e.g. 4G "
                        "(the default holds every plan of the shipped student's two buckets); 0 encodes them "
                        "per request")
    p.add_argument("--tokens", type=Path, default=None,
                   help="JSON file of bearer tokens with per-token quotas (see he_inhibitor/service/auth.py)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run each evaluation on a worker of the Ray cluster at ADDRESS ('local': Ray embedded)")
    p.add_argument("--lanes", type=int, default=1,
                   help="K > 1: split each evaluation's attention shifts K ways, lanes 1..K-1 on Ray actors "
                        "(lane 0 in this process; with --ray on that cluster, else Ray embedded)")
    p.set_defaults(func=lambda a: serve(a.circuit, a.host, a.port, Limits(memory_budget=a.memory_budget,
                                                                          max_keys=a.max_keys,
                                                                          weight_cache=a.weight_cache), a.tokens,
                                        a.ray, a.lanes) or 0)
