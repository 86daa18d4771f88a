"""The evaluation server (FastAPI + uvicorn) and `he-inhibitor serve`.

It holds the compiled circuit and, per client, only public evaluation keys;
it never sees a secret key or a plaintext. Handlers read bodies under a size
limit, validate them (validate.py: every failure is a typed 4xx), and run the
SEAL work in the thread pool behind a semaphore, so a bad request costs one
answer and nothing else: the next request is served as if it never happened.
Per request it is stateless apart from the key registry and the evaluations
paused at a refresh round trip (registry.py, both bounded).
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import tenseal.sealapi as seal
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from he_inhibitor.ckks import CkksParams, make_context
from he_inhibitor.ckks.context import level_scales
from he_inhibitor.circuit.compile import Compiled
from he_inhibitor.service.artifacts import load_circuit
from he_inhibitor.service.evaluate import CircuitEvaluator, signature_of
from he_inhibitor.service.protocol import (
    CONTENT_TYPE, H_JOB, H_KEY_ID, H_SERVER_SECONDS, H_STATUS, H_TOKENS, STATUS_DONE, STATUS_REFRESH, Limits,
    pack_frames,
)
from he_inhibitor.service.registry import Job, JobTable, KeyRegistry
from he_inhibitor.service.validate import (
    Mismatch, RequestError, TooLarge, check_ciphertexts, check_context, check_tokens,
)

DEFAULT_LABELS = ("negative", "positive")  # SST-2
_BINARY = {"content": {CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}}}
_ERRORS = {s: {"description": d} for s, d in (
    (400, "malformed body or headers"), (403, "the context carries a secret key (refused, not stored)"),
    (404, "unknown key id or job"), (413, "body over the size limit"), (415, "body is not application/octet-stream"),
    (422, "parameters, levels or scales do not match the circuit"), (503, "too many paused evaluations"))}


class UnsupportedMedia(RequestError):
    status = 415
    code = "unsupported_media_type"


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes (declared or streamed)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != CONTENT_TYPE:
        raise UnsupportedMedia(f"send the body as {CONTENT_TYPE}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"body of {declared} bytes exceeds the limit of {limit}")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise TooLarge(f"body exceeds the limit of {limit} bytes")
    return bytes(buf)


def create_app(compiled: Compiled, params: CkksParams, labels: tuple[str, ...] = DEFAULT_LABELS,
               limits: Limits = Limits()) -> FastAPI:
    """A server for one compiled circuit under `params`."""
    sig = signature_of(compiled, params, labels)
    scales = level_scales(make_context(params), params.scale)
    registry = KeyRegistry(lambda public: CircuitEvaluator(compiled, params, public),
                           limits.max_keys, limits.max_key_bytes)
    jobs = JobTable(limits.max_jobs, limits.job_ttl_s)
    running = threading.BoundedSemaphore(limits.max_concurrent)
    frame_limit = len(sig.inputs) * (sig.max_ciphertext_bytes + 8) + 8

    app = FastAPI(title="he-inhibitor", version="1",
                  description="Encrypted sentiment inference: the server evaluates a CKKS circuit on "
                              "ciphertexts with public evaluation keys only.")
    app.state.registry, app.state.jobs, app.state.signature = registry, jobs, sig

    @app.exception_handler(RequestError)
    async def _client_error(request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse({"error": err.code, "detail": str(err)}, status_code=err.status)

    def advance(job: Job, fresh: seal.Ciphertext | None, t0: float) -> Response:
        """Run the evaluation to its next refresh (answer: the masked ciphertext) or to its end.

        X-Server-Seconds counts from t0, when the handler started parsing the ciphertexts.
        """
        with running:
            try:
                out = job.evaluation.send(fresh)
                status, cts = STATUS_REFRESH, [out]
            except StopIteration as stop:
                status, cts = STATUS_DONE, [stop.value[name] for name in sig.outputs]
            except (RuntimeError, ValueError) as err:  # SEAL refused these ciphertexts mid-circuit
                raise Mismatch(f"evaluation failed on these ciphertexts: {err}") from err
            body = pack_frames([job.evaluator.reply_bytes(ct) for ct in cts])
        headers = {H_STATUS: status, H_SERVER_SECONDS: f"{time.perf_counter() - t0:.6f}"}
        if status == STATUS_REFRESH:
            headers[H_JOB] = jobs.park(job)
        return Response(body, media_type=CONTENT_TYPE, headers=headers)

    @app.get("/v1/health")
    def health() -> dict:
        return {"status": "ok", "keys": len(registry), "key_bytes": registry.nbytes, "paused_jobs": len(jobs)}

    @app.get("/v1/signature")
    def signature() -> dict:
        return sig.to_json()

    @app.post("/v1/keys", status_code=201, responses=_ERRORS, openapi_extra={"requestBody": _BINARY})
    async def register(request: Request) -> dict:
        """Register a public context (relin + Galois keys, never a secret key) once; returns its key id."""
        body = await _read_body(request, limits.max_context_bytes)
        public = await run_in_threadpool(check_context, body, sig)
        kid = await run_in_threadpool(registry.register, public)
        return {"key_id": kid, "bytes": len(body), "rotation_steps": list(public.rotation_steps)}

    @app.post("/v1/evaluate", responses={200: _BINARY, **_ERRORS}, openapi_extra={"requestBody": _BINARY})
    async def evaluate(request: Request) -> Response:
        """Input ciphertexts (one frame per signature input) -> output ciphertexts or a refresh request."""
        kid = request.headers.get(H_KEY_ID)
        evaluator = registry.get(kid)
        n_tokens = check_tokens(request.headers.get(H_TOKENS), sig.T)
        body = await _read_body(request, frame_limit)

        def work() -> Response:
            t0 = time.perf_counter()
            cts = check_ciphertexts(body, len(sig.inputs), evaluator.public, sig.input_level, scales[sig.input_level])
            return advance(Job(evaluator.run(cts, n_tokens), evaluator), None, t0)

        return await run_in_threadpool(work)

    @app.post("/v1/jobs/{job_id}", responses={200: _BINARY, **_ERRORS}, openapi_extra={"requestBody": _BINARY})
    async def refresh(job_id: str, request: Request) -> Response:
        """The client's re-encryption of the masked ciphertext it was sent; continues the evaluation."""
        body = await _read_body(request, sig.max_ciphertext_bytes + 16)
        job = jobs.take(job_id)

        def work() -> Response:
            t0 = time.perf_counter()
            try:
                (fresh,) = check_ciphertexts(body, 1, job.evaluator.public, sig.input_level, scales[sig.input_level])
            except RequestError:
                jobs.park(job, job_id)  # a bad refresh body does not cost the client its evaluation
                raise
            return advance(job, fresh, t0)

        return await run_in_threadpool(work)

    return app


def serve(circuit: Path | None, host: str, port: int, limits: Limits = Limits()) -> None:
    import uvicorn

    compiled, params = load_circuit(circuit)
    uvicorn.run(create_app(compiled, params, limits=limits), host=host, port=port)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a compiled circuit over HTTP (public evaluation keys only)")
    p.add_argument("--circuit", type=Path, default=None, help="compiled bundle directory (default: the shipped one)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=lambda a: serve(a.circuit, a.host, a.port) or 0)
