"""ONNX Runtime sessions that skip graph optimisation after the first time: the optimised graph, cached.

Creating a session spends about half its time optimising the graph (fusing attention, layer norms, the
int8 matmuls). The first session of a tower saves ORT's optimised graph
(``SessionOptions.optimized_model_filepath``); later ones load that file with optimisation off
(``ORT_DISABLE_ALL``). The cached graph is keyed like the export and more: the exported file's content hash,
the ONNX Runtime version, the execution provider and the CPU's flags (an ``ORT_ENABLE_ALL`` graph may hold
kernels laid out for this CPU). It lives in ``optimized/`` beside the export (or in the cache folder where
that is read-only), written through a temporary file and ``os.replace``; its side file ``<name>.json``,
written last, names its size, modification time and xxh3 hash: a file of another size, or whose time changed
and whose content no longer has that hash, is recognised as damaged, said in one line and rebuilt (as is one ORT
cannot load). ORT reads the file from its path (half the CPU of handing it the bytes). No torch here.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from retrieval.model.onnx_files import cache_root, writable, write_atomic
from retrieval.model.precision import cpu_flags

CACHE_VERSION = 1
"""Bumped when what is cached changes: older files are then ignored (and replaced)."""
PROVIDER = "CPUExecutionProvider"
SUBDIR = "optimized"


def graph_key(source_xxh3: str, ort_version: str, provider: str = PROVIDER,
              flags: frozenset[str] | None = None) -> str:
    """The key of one optimised graph: the exported file's hash, ORT's version, the provider, the CPU's flags."""
    import xxhash

    flags = cpu_flags() if flags is None else flags
    parts = [str(CACHE_VERSION), source_xxh3, ort_version, provider, " ".join(sorted(flags))]
    return xxhash.xxh3_64("\0".join(parts).encode()).hexdigest()


def cache_folder(export_folder: Path) -> Path:
    """``optimized/`` beside the export where it can be written, else under the cache folder."""
    beside = export_folder / SUBDIR
    if beside.is_dir() or writable(beside):
        return beside
    return cache_root().parent / "onnx-optimized" / export_folder.name


def _check_cached(path: Path, key: str) -> tuple[bool, str]:
    """Is the cached graph there, this key's and whole? (ok, why not). ``why`` is "" where there simply is no
    graph for this key yet (nothing to say). A file with the recorded size and modification time is taken as
    written; one whose time changed is hashed and must match the recorded xxh3."""
    import xxhash

    side = path.with_name(path.name + ".json")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False, ""
    except (OSError, ValueError):
        return False, f"the optimised graph's record {side} cannot be read"
    if not isinstance(meta, dict) or meta.get("key") != key:
        return False, ""  # another ORT, CPU or export: made again for this one
    try:
        stat = path.stat()
        if stat.st_size != meta.get("bytes"):
            return False, f"the optimised graph {path} is damaged ({stat.st_size:,} bytes, its record says " \
                          f"{meta.get('bytes')})"
        if stat.st_mtime_ns == meta.get("mtime_ns"):
            return True, ""
        if xxhash.xxh3_64(path.read_bytes()).hexdigest() != meta.get("xxh3"):
            return False, f"the optimised graph {path} is damaged (its content hash differs from its record)"
    except OSError as exc:
        return False, f"the optimised graph {path} cannot be read ({exc.strerror or exc})"
    return True, ""


_ahead: dict[tuple[str, str, str], Future[Any]] = {}
_ahead_lock = threading.Lock()


def open_ahead(source: Callable[[], bytes], source_xxh3: str, export_folder: Path, name: str,
               options: Callable[[], Any], *, log: Callable[[str], None] | None = None) -> None:
    """Start :func:`cached_session` in a background thread; the :func:`cached_session` call for the same graph
    then takes its session instead of making one (ORT builds a session without holding the GIL, so a cold
    search overlaps it with its imports and the store's opening). A failure there is left to that call."""
    key = (str(export_folder), name, source_xxh3)
    with _ahead_lock:
        if key in _ahead:
            return
        future: Future[Any] = Future()
        _ahead[key] = future

    def work() -> None:
        try:
            future.set_result(cached_session(source, source_xxh3, export_folder, name, options, log=log,
                                             ahead=False))
        except BaseException as exc:  # noqa: BLE001  handed to the caller, which tries again itself
            future.set_exception(exc)

    threading.Thread(target=work, name=f"clipdex-open-{name}").start()


def cached_session(source: Callable[[], bytes], source_xxh3: str, export_folder: Path, name: str,
                   options: Callable[[], Any], *, log: Callable[[str], None] | None = None,
                   ahead: bool = True) -> Any:
    """An ``onnxruntime.InferenceSession`` for one exported graph, through the optimised-graph cache.

    ``source()`` gives the exported graph's (checked) bytes, read only where the cache misses;
    ``source_xxh3`` is its manifest hash; ``name`` names the file (``textual-int8``); ``options()`` makes fresh
    SessionOptions. A damaged cached file is said in one line through ``log`` and made again; a cache that
    cannot be written only costs the optimisation each time. ``ahead``: take the session :func:`open_ahead`
    started for this graph, if any."""
    if ahead:
        with _ahead_lock:
            future = _ahead.pop((str(export_folder), name, source_xxh3), None)
        if future is not None:
            try:
                return future.result()
            except Exception:  # noqa: BLE001  made again here, where a damaged export is repaired
                pass
    import onnxruntime as ort
    import xxhash

    key = graph_key(source_xxh3, ort.__version__)
    folder = cache_folder(export_folder)
    path = folder / f"{name}.onnx"
    ok, problem = _check_cached(path, key)
    if ok:
        opts = options()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:  # from the path: ORT reads it itself, half the CPU of handing it bytes
            return ort.InferenceSession(str(path), opts, providers=[PROVIDER])
        except Exception as exc:  # ORT's own errors (Fail, InvalidGraph): a file it cannot load is made again
            problem = f"the optimised graph {path} cannot be loaded ({str(exc).splitlines()[0][:200]})"
    if problem and log is not None:
        log(f"{problem}; optimising the graph again")
    opts = options()
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.tmp-{os.getpid()}.onnx"
        opts.optimized_model_filepath = str(tmp)
    except OSError:
        tmp = None
    session = ort.InferenceSession(source(), opts, providers=[PROVIDER])
    if tmp is not None:
        try:
            optimised = tmp.read_bytes()
            path.with_name(path.name + ".json").unlink(missing_ok=True)  # no record names a file being replaced
            os.replace(tmp, path)
            side = {"key": key, "bytes": len(optimised), "xxh3": xxhash.xxh3_64(optimised).hexdigest(),
                    "mtime_ns": path.stat().st_mtime_ns, "source_xxh3": source_xxh3,
                    "onnxruntime": ort.__version__, "provider": PROVIDER}
            write_atomic(path.with_name(path.name + ".json"), json.dumps(side).encode())
        except OSError:
            pass  # a read-only or full disk: this process ran fine, the next one optimises again
        finally:
            tmp.unlink(missing_ok=True)
    return session
