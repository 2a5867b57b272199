"""Decode untrusted image files in worker processes under a wall-time budget, callable from any thread.

``ingest.decode.time_limit`` relies on SIGALRM, which only works in a process's main thread; a web
server decodes in its worker threads. Here each decode runs in a separate process (``python -m
ingest.decode_pool``, importing only Pillow and numpy), and a worker that overruns its budget is
killed and replaced: the caller gets a :class:`DecodeError` on time, whatever the decoder was doing.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from contextlib import suppress
from multiprocessing.connection import Connection
from typing import Any

from ingest.decode import DecodeError, load_image

START_TIMEOUT_S = 120.0
"""How long a new worker may take to start (imports on a loaded machine); not part of a decode's budget."""


class DecodeTimeout(DecodeError):
    """A decode overran its budget (its worker has been killed)."""


class DecodersBusy(Exception):
    """Every worker stayed busy for a whole budget: the caller should answer "try again later"."""


def thumbnail_jpeg(path: str, size: int, max_megapixels: float) -> bytes:
    """A JPEG of ``path``, upright, at most ``size`` pixels on its longer side."""
    image = load_image(path, max_megapixels=max_megapixels, draft_size=size)
    image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def upright_bitmap(path: str, out: str, draft_size: int, max_megapixels: float) -> None:
    """Decode ``path`` as ``load_image`` does and write the pixels to ``out`` as a plain BMP.

    Loading the BMP gives exactly the same RGB pixels, from a format with nothing left to exploit.
    """
    load_image(path, max_megapixels=max_megapixels, draft_size=draft_size).save(out, "BMP")


JOBS = {"thumbnail": thumbnail_jpeg, "bitmap": upright_bitmap}


def _serve() -> None:
    """Worker process: answer jobs from stdin on stdout until stdin closes."""
    jobs, answers = Connection(os.dup(0), writable=False), Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # a stray print must not corrupt the answers
    answers.send(("ready", None))
    while True:
        try:
            name, args = jobs.recv()
        except EOFError:
            return
        try:
            answers.send(("ok", JOBS[name](*args)))
        except DecodeError as exc:
            answers.send(("decode", str(exc)))
        except Exception as exc:  # anything else is still this file's problem, told in one line
            answers.send(("decode", f"corrupt image ({type(exc).__name__}: {str(exc)[:200]})"))


class _Worker:
    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "ingest.decode_pool"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, close_fds=True)
        assert self.process.stdin is not None and self.process.stdout is not None
        self.jobs = Connection(os.dup(self.process.stdin.fileno()), readable=False)
        self.answers = Connection(os.dup(self.process.stdout.fileno()), writable=False)
        try:
            self._expect("ready", START_TIMEOUT_S, DecodeError("the decoder process did not start"))
        except BaseException:
            self.kill()
            raise

    def _expect(self, kind: str, timeout: float, late: DecodeError) -> Any:
        if not self.answers.poll(timeout):
            raise late
        status, value = self.answers.recv()
        if status == "decode":
            raise DecodeError(value)
        assert status == kind, status
        return value

    def call(self, name: str, args: tuple[Any, ...], timeout: float) -> Any:
        self.jobs.send((name, args))
        return self._expect("ok", timeout, DecodeTimeout(f"decode took longer than {timeout:g} s"))

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        for end in (self.jobs, self.answers, self.process.stdin, self.process.stdout):
            if end is not None:
                end.close()


class DecodePool:
    """Up to ``workers`` decoder processes; each job gets ``timeout_s`` of wall time or its worker is killed."""

    def __init__(self, workers: int = 2, timeout_s: float = 10.0):
        self.timeout_s = timeout_s
        self._slots = threading.BoundedSemaphore(workers)
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self.killed: list[int] = []
        """Process ids of workers killed for overrunning the budget (diagnostics)."""

    def run(self, name: str, *args: Any) -> Any:
        """``JOBS[name](*args)`` in a worker: its result, or :class:`DecodeError` (also on time-out)."""
        if not self._slots.acquire(timeout=self.timeout_s):
            raise DecodersBusy(f"all image decoders stayed busy for {self.timeout_s:g} s")
        try:
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            worker = worker or _Worker()
            try:
                result = worker.call(name, args, self.timeout_s)
            except DecodeTimeout:
                worker.kill()  # still decoding: stop it now, a fresh worker takes the next job
                self.killed.append(worker.process.pid)
                raise
            except DecodeError:
                self._give_back(worker)  # the file was bad, the worker is fine
                raise
            except (EOFError, OSError):
                worker.kill()
                raise DecodeError("the decoder process died while decoding (out of memory?)") from None
            except BaseException:
                worker.kill()
                raise
            self._give_back(worker)
            return result
        finally:
            self._slots.release()

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(worker)
                return
        worker.kill()

    def warm(self) -> None:
        """Start one worker ahead of the first job (errors are left for that job to meet)."""
        with suppress(Exception):
            worker = _Worker()
            self._give_back(worker)

    def pids(self) -> list[int]:
        """Process ids of the idle workers (for tests and diagnostics)."""
        with self._lock:
            return [w.process.pid for w in self._idle]

    def close(self) -> None:
        """Stop the idle workers; busy ones stop when their job ends."""
        with self._lock:
            self._closed, idle, self._idle = True, self._idle, []
        for worker in idle:
            worker.kill()


if __name__ == "__main__":
    _serve()
