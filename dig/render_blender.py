"""Blender rendering in worker processes: a pool of ``python -m dig.blender_worker`` subprocesses fed
JSON jobs, so a Blender crash costs one pair (retried on a fresh worker) and bpy never loads in the
caller. Used by :mod:`dig.pairs` (``--renderer blender``) and ``bench/render_throughput.py``.

>>> # with BlenderPool(workers=2) as pool:
>>> #     pool.submit(job).result()   # job: see dig.blender_worker

Set ``TINYGG_BLENDER_DEVICE=cpu`` to keep Cycles off a GPU; by default a GPU backend is used when found.
Worker logs (Blender's own output) go to ``log_dir`` (default: a temporary directory), one file per slot.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Self

logger = logging.getLogger(__name__)

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


class RenderError(RuntimeError):
    """A job failed on every try (worker crash, timeout or an error inside Blender)."""


class _JobError(RenderError):
    """The worker is alive but the job raised inside it (its reply says ``ok: false``)."""


def worker_command() -> list[str]:
    return [sys.executable, "-m", "dig.blender_worker"]


class WorkerPool:
    """``workers`` long-lived subprocesses speaking one-JSON-line-per-job; see :mod:`dig.blender_worker`.

    ``submit(job)`` returns a Future of the worker's reply. A job whose worker dies, times out or replies
    ``ok: false`` is retried up to ``retries`` times on a fresh process, then fails with RenderError.
    """

    def __init__(self, command: Sequence[str], workers: int = 1, retries: int = 2, timeout: float | None = None,
                 env: dict[str, str] | None = None, log_dir: str | Path | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.command = list(command)
        self.retries = retries
        self.timeout = timeout
        self.env = dict(os.environ if env is None else env)
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, self.env.get("PYTHONPATH")) if p)
        self._tmp = None if log_dir is not None else tempfile.TemporaryDirectory(prefix="tinygg-blender-")
        self.log_dir = Path(log_dir if log_dir is not None else self._tmp.name)  # type: ignore[union-attr]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._jobs: queue.Queue = queue.Queue()
        self._threads = [threading.Thread(target=self._serve, args=(k,), daemon=True) for k in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, job: dict[str, Any]) -> Future:
        fut: Future = Future()
        self._jobs.put((job, fut))
        return fut

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one slot ------------------------------------------------------------------------------------
    def _start(self, slot: int) -> tuple[subprocess.Popen, Any]:
        log = open(self.log_dir / f"worker-{slot}.log", "ab")  # noqa: SIM115 (open as long as the worker)
        proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                env=self.env, text=True, bufsize=1)
        return proc, log

    def _ask(self, proc: subprocess.Popen, job: dict[str, Any]) -> dict[str, Any]:
        proc.stdin.write(json.dumps(job) + "\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        ready, _, _ = select.select([proc.stdout], [], [], self.timeout)
        if not ready:
            raise RenderError(f"job {job.get('id')}: no reply within {self.timeout} s")
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RenderError(f"job {job.get('id')}: the worker died (exit code {proc.wait()})")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise _JobError(f"job {job.get('id')}: {reply.get('error', 'failed')}")
        return reply

    def _serve(self, slot: int) -> None:
        proc, log = None, None
        try:
            while True:
                item = self._jobs.get()
                if item is None:
                    return
                job, fut = item
                for attempt in range(self.retries + 1):
                    try:
                        if proc is None or proc.poll() is not None:
                            if log is not None:
                                log.close()
                            proc, log = self._start(slot)
                        fut.set_result(self._ask(proc, job))
                        break
                    except (RenderError, OSError, ValueError) as exc:
                        logger.warning("worker %d, try %d of %d: %s", slot, attempt + 1, self.retries + 1,
                                       str(exc).strip().splitlines()[-1][:300])
                        if not isinstance(exc, _JobError) and proc is not None and proc.poll() is None:
                            proc.kill()  # hung or garbled: replace it
                            proc.wait()
                        if attempt == self.retries:
                            fut.set_exception(RenderError(f"{exc} (after {self.retries + 1} tries; logs in "
                                                          f"{self.log_dir})"))
        finally:
            if proc is not None and proc.poll() is None:
                proc.stdin.close()  # type: ignore[union-attr]
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            if log is not None:
                log.close()


class BlenderPool(WorkerPool):
    """A :class:`WorkerPool` of Blender render workers (needs ``pip install bpy==5.0.1``)."""

    def __init__(self, workers: int = 1, retries: int = 2, timeout: float | None = 3600.0,
                 log_dir: str | Path | None = None) -> None:
        super().__init__(worker_command(), workers, retries, timeout, log_dir=log_dir)
