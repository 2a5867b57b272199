"""Decode untrusted image files in worker processes under a wall-time budget, callable from any thread.

``ingest.decode.time_limit`` relies on SIGALRM, which only works in a process's main thread; a web
server decodes in its worker threads. Here each decode runs in a separate process (``python -m
ingest.decode_pool``, importing only Pillow and numpy), and a worker that overruns its budget is
killed and replaced: the caller gets a :class:`DecodeError` on time, whatever the decoder was doing.

Files travel as open descriptors (``SCM_RIGHTS`` over the worker's socket), never by name: a server
that opened a file once, inside its ingested roots, has the worker decode exactly that file. Each
worker's address space is capped (``memory_mb``), so one decode cannot take the machine's memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import os
import socket
import subprocess
import sys
import threading
from contextlib import suppress
from multiprocessing.connection import Connection
from typing import Any

from ingest.decode import DecodeError, load_image
from ingest.query_image import query_image

START_TIMEOUT_S = 120.0
"""How long a new worker may take to start (imports on a loaded machine); not part of a decode's budget."""


class DecodeTimeout(DecodeError):
    """A decode overran its budget (its worker has been killed)."""


class DecodersBusy(Exception):
    """Every worker stayed busy for a whole budget: the caller should answer "try again later"."""


def thumbnail_jpeg(source: str | int, size: int, max_megapixels: float) -> bytes:
    """A JPEG of ``source`` (a path or an open descriptor), upright, at most ``size`` pixels on its longer side."""
    image = load_image(source, max_megapixels=max_megapixels, draft_size=size)
    image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def query_bitmap(source: int, out: int, size: int, max_megapixels: float) -> tuple[int, int]:
    """Decode the query image open as ``source`` (:func:`ingest.query_image.query_image`) and write its
    pixels to the open file ``out`` as a plain BMP; returns its (width, height).

    Loading the BMP gives exactly the same RGB pixels, from a format with nothing left to exploit.
    """
    image = query_image(source, size=size, max_megapixels=max_megapixels)
    with os.fdopen(os.dup(out), "wb") as fh:
        fh.truncate(0)
        image.save(fh, "BMP")
    return image.size


def video_frame_jpeg(source: int, time_s: float, size: int, max_megapixels: float) -> bytes:
    """A JPEG of the frame at ``time_s`` of the video open as ``source``, upright, at most ``size`` pixels on its
    longer side (PyAV loads in the worker only for this job)."""
    from ingest.video.frame import frame_at
    from ingest.video.probe import VideoError

    try:
        with os.fdopen(os.dup(source), "rb") as fh:
            image = frame_at(fh, time_s, max_side=size, max_megapixels=max_megapixels)
    except VideoError as exc:
        raise DecodeError(str(exc)) from None
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


JOBS = {"thumbnail": thumbnail_jpeg, "bitmap": query_bitmap, "video_frame": video_frame_jpeg}


def _release_memory() -> None:
    """Hand freed heap back to the system after a large decode (glibc keeps it otherwise)."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def _limit_memory() -> None:
    """Cap this worker's address space at ``CLIPDEX_DECODE_MEMORY_MB`` (0 or unset: no cap)."""
    mb = int(os.environ.get("CLIPDEX_DECODE_MEMORY_MB", "0") or 0)
    if mb > 0:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (mb << 20, mb << 20))


def _serve() -> None:
    """Worker process: answer jobs from the socket on stdin until it closes.

    A job is ``(name, args, n)``; with ``n`` > 0, ``n`` descriptors follow (one ``SCM_RIGHTS`` message)
    and are passed first, before ``args``, then closed.
    """
    sock = socket.socket(fileno=os.dup(0))
    channel = Connection(os.dup(0))
    os.dup2(2, 1)  # a stray print must not corrupt the answers
    _limit_memory()
    channel.send(("ready", None))
    while True:
        try:
            name, args, count = channel.recv()
            fds = socket.recv_fds(sock, 1, count)[1] if count else []
        except (EOFError, OSError):
            return
        try:
            channel.send(("ok", JOBS[name](*fds, *args)))
        except DecodeError as exc:
            channel.send(("decode", str(exc)))
        except MemoryError:
            channel.send(("decode", "image needs more memory to decode than a decoder may use"))
        except Exception as exc:  # anything else is still this file's problem, told in one line
            channel.send(("decode", f"corrupt image ({type(exc).__name__}: {str(exc)[:200]})"))
        finally:
            for fd in fds:
                os.close(fd)
            _release_memory()


class _Worker:
    def __init__(self, memory_mb: int = 0) -> None:
        ours, theirs = socket.socketpair()
        env = dict(os.environ, CLIPDEX_DECODE_MEMORY_MB=str(memory_mb), MALLOC_ARENA_MAX="2",
                   OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        try:
            self.process = subprocess.Popen([sys.executable, "-m", "ingest.decode_pool"], stdin=theirs,
                                            stdout=subprocess.DEVNULL, close_fds=True, env=env)
        finally:
            theirs.close()
        self.sock = ours
        self.jobs = self.answers = Connection(os.dup(ours.fileno()))
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

    def call(self, name: str, args: tuple[Any, ...], timeout: float, fds: tuple[int, ...] = ()) -> Any:
        self.jobs.send((name, args, len(fds)))
        if fds:
            socket.send_fds(self.sock, [b"f"], list(fds))
        return self._expect("ok", timeout, DecodeTimeout(f"decode took longer than {timeout:g} s"))

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.jobs.close()
        self.sock.close()


class DecodePool:
    """Up to ``workers`` decoder processes; each job gets ``timeout_s`` of wall time or its worker is killed.

    ``memory_mb``: the address-space cap of each worker (0: none); a decode beyond it fails as this file's
    problem (:class:`DecodeError`), and the worker lives on.
    """

    def __init__(self, workers: int = 2, timeout_s: float = 10.0, memory_mb: int = 0):
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self._slots = threading.BoundedSemaphore(workers)
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self.killed: list[int] = []
        """Process ids of workers killed for overrunning the budget (diagnostics)."""

    def run(self, name: str, *args: Any, fds: tuple[int, ...] = ()) -> Any:
        """``JOBS[name](*fds, *args)`` in a worker: its result, or :class:`DecodeError` (also on time-out).

        ``fds``: open descriptors the worker receives (its own copies) in front of ``args``."""
        if not self._slots.acquire(timeout=self.timeout_s):
            raise DecodersBusy(f"all image decoders stayed busy for {self.timeout_s:g} s")
        try:
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            worker = worker or _Worker(self.memory_mb)
            try:
                result = worker.call(name, args, self.timeout_s, fds)
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
            worker = _Worker(self.memory_mb)
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
