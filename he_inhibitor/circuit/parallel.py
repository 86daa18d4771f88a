"""Both cores on one sentence: lane-1 nodes (half the attention shifts) run in a worker process.

Calls into `tenseal.sealapi` hold the GIL, so two threads run no faster than
one; the second core takes a process. The compiler puts each half of the
attention shifts on its own lane (attention.shift_lanes); the main process
evaluates lane 0 (everything else, and the client's side: encryption,
refreshes, decryption), the worker lane 1. The worker is forked once, loads
the public keys once, and keeps its own plaintext caches across requests.

Ciphertexts cross between the processes only where a lane consumes another
lane's value (per attention layer: Q2, K2, V2 out, one accumulator back),
through files in /dev/shm (SEAL serializes only to paths); the pipe carries
only node ids and paths, so a send never blocks and both sides, walking the
same topological order, cannot deadlock.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import tenseal.sealapi as seal

from he_inhibitor.ckks import CkksParams, PublicContext
from he_inhibitor.ckks.context import level_of
from he_inhibitor.circuit.compile import Compiled
from he_inhibitor.circuit.encrypted import EncryptedExecutor, EncryptedResult
from he_inhibitor.circuit.ir import Circuit, CircuitError, OpKind
from he_inhibitor.circuit.plain import last_uses

_SHM = "/dev/shm" if Path("/dev/shm").is_dir() else None


def lanes_of(circuit: Circuit) -> list[int]:
    return sorted({n.lane for n in circuit.nodes if n.op is not OpKind.CONST})


def crossings(circuit: Circuit, lane: int) -> set[int]:
    """Nodes of `lane` that a node of another lane consumes (CONST payloads are local everywhere)."""
    out = set()
    for node in circuit.nodes:
        if node.op is OpKind.CONST:
            continue
        for a in node.args:
            src = circuit.nodes[a]
            if src.op is not OpKind.CONST and src.lane == lane and node.lane != lane:
                out.add(a)
    return out


class _Link:
    """One end of the pipe: values of the other lane arrive by node id, ours leave when consumed there."""

    def __init__(self, conn: Connection, circuit: Circuit, lane: int, context: seal.SEALContext) -> None:
        self.conn, self.circuit, self.lane, self.context = conn, circuit, lane, context
        self.outbound = crossings(circuit, lane)
        self.inbox: dict[int, str] = {}
        self.transfer_seconds = 0.0

    def remote(self, node: int) -> bool:
        return self.circuit.nodes[node].lane != self.lane

    def offer(self, node: int, ct: seal.Ciphertext) -> None:
        if node in self.outbound:
            t = time.perf_counter()
            fd, path = tempfile.mkstemp(prefix="he-inhibitor-lane-", suffix=".ct", dir=_SHM)
            os.close(fd)
            ct.save(path)
            self.conn.send(("value", node, path))
            self.transfer_seconds += time.perf_counter() - t

    def receive(self, node: int) -> seal.Ciphertext:
        while node not in self.inbox:
            msg = self.conn.recv()
            if msg[0] == "error":
                raise CircuitError(f"lane worker failed:\n{msg[1]}")
            if msg[0] != "value":
                raise CircuitError(f"unexpected message from the other lane: {msg[0]!r}")
            self.inbox[msg[1]] = msg[2]
        t = time.perf_counter()
        path = self.inbox.pop(node)
        ct = seal.Ciphertext()
        ct.load(self.context, path)
        os.unlink(path)
        self.transfer_seconds += time.perf_counter() - t
        return ct

    def discard(self) -> None:
        for path in self.inbox.values():
            os.unlink(path)
        self.inbox.clear()


def _serve_lane(conn: Connection, compiled: Compiled, params: CkksParams, public_blob: bytes, lane: int) -> None:
    """The worker: evaluate `lane`'s nodes for each ("run", mask) until ("stop",)."""
    try:
        ex = EncryptedExecutor(compiled, params, public=PublicContext.from_bytes(public_blob))
        circuit = compiled.circuit
        drops = last_uses(circuit)
        conn.send(("ready",))
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                return
            cpu = time.process_time()
            public = compiled.public_plaintexts(msg[1])
            link = _Link(conn, circuit, lane, ex.ctx)
            values: dict[int, object] = {}
            chain: dict[int, int] = {}
            for i, node in enumerate(circuit.nodes):
                if node.op is OpKind.CONST:
                    values[i] = (node.arg, circuit.consts[node.arg])
                elif node.lane == lane:
                    for j in node.args:
                        if j not in values:
                            values[j] = link.receive(j)
                    values[i] = ex.op(node, [values[j] for j in node.args], public)
                    chain[i] = level_of(ex.ctx, values[i])
                    link.offer(i, values[i])
                for j in drops[i]:
                    values.pop(j, None)
            conn.send(("done", chain, time.process_time() - cpu, link.transfer_seconds))
    except Exception:  # report to the main process rather than die silently
        conn.send(("error", traceback.format_exc()))


class ParallelExecutor:
    """An EncryptedExecutor whose lane-1 nodes run in a forked worker process; same results.

    Use as a context manager (or call close()) so the worker does not outlive it.
    """

    def __init__(self, ex: EncryptedExecutor) -> None:
        lanes = lanes_of(ex.circuit)
        if lanes != [0, 1]:
            raise CircuitError(f"the parallel executor runs circuits with lanes [0, 1], not {lanes}")
        if ex.keys is None:
            raise CircuitError("the main process plays the client too: it needs the client keys")
        self.ex = ex
        ctx = mp.get_context("fork")  # the worker inherits the compiled circuit instead of unpickling 100+ MB
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve_lane, args=(child, ex.compiled, ex.params, ex.public.to_bytes(), 1),
                                daemon=True)
        self.proc.start()
        child.close()
        msg = self.conn.recv()
        if msg[0] != "ready":
            self.close()
            raise CircuitError(f"lane worker failed to start:\n{msg[1] if len(msg) > 1 else msg}")
        self.worker_cpu_seconds = 0.0  # the last run's CPU time in the worker
        self.transfer_seconds = 0.0  # the last run's serialization time, both sides

    def run(self, x0: np.ndarray, m: np.ndarray) -> EncryptedResult:
        """One sentence; after any failure the worker is stopped (its pipe may hold a stale run)."""
        self.conn.send(("run", np.asarray(m, dtype=np.float64)))
        link = _Link(self.conn, self.ex.circuit, 0, self.ex.ctx)
        try:
            res = self.ex.run(x0, m, link)
            msg = self.conn.recv()
        except BaseException:
            self.close()
            raise
        finally:
            link.discard()
        if msg[0] == "error":
            self.close()
            raise CircuitError(f"lane worker failed:\n{msg[1]}")
        _, chain, cpu, transfer = msg
        res.chain_index.update(chain)
        self.worker_cpu_seconds, self.transfer_seconds = cpu, transfer + link.transfer_seconds
        return res

    def close(self) -> None:
        if self.proc.is_alive():
            try:
                self.conn.send(("stop",))
            except OSError:  # the pipe is gone: terminate below
                pass
            self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join()
        self.conn.close()

    def __enter__(self) -> ParallelExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def compiled(self) -> Compiled:
        return self.ex.compiled

    @property
    def params(self) -> CkksParams:
        return self.ex.params

