"""The identity of a model's weights without loading them (and without importing torch).

A collection records ``weights_fingerprint``: the content hash of the weights file, wherever it
lives, so moving a checkout or mounting it elsewhere keeps its collections valid.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from retrieval.model import hub
from retrieval.settings import ModelSettings

LOCAL_DIR = "local-dir:"
WEIGHTS_NAME = "open_clip_model.safetensors"


def weights_file(settings: ModelSettings) -> Path | None:
    """The file the weights come from (a ``local-dir:`` folder's, a cached hub model's or a checkpoint),
    or None for tags and hub models not downloaded yet."""
    if settings.name.startswith(LOCAL_DIR):
        return Path(settings.name[len(LOCAL_DIR) :]) / WEIGHTS_NAME
    if settings.name.startswith(hub.HF_HUB):
        return hub.cached_file(settings.name[len(hub.HF_HUB) :].strip("/"), hub.WEIGHT_FILES)
    if settings.pretrained and Path(settings.pretrained).expanduser().is_file():
        return Path(settings.pretrained).expanduser()
    return None


def weights_fingerprint(settings: ModelSettings) -> str | None:
    """The identity of file-based weights: ``xxh3:`` + the file's content hash, wherever it lives.

    "" for pretrained tags (the tag is their identity) and for a folder without weights (random init);
    None for a hub model that is not downloaded yet (known once loaded). The hash is computed without
    loading the model, so a collection can be checked when it opens.
    """
    file = weights_file(settings)
    if file is None and settings.name.startswith(hub.HF_HUB):
        return None
    return f"xxh3:{file_digest(file)}" if file is not None and file.is_file() else ""


def source_label(settings: ModelSettings) -> str:
    """The weights' source as shown to people: a tag, or a file with its content hash."""
    file = weights_file(settings)
    if file is None:
        return settings.pretrained
    return f"{file}#{weights_fingerprint(settings)}" if file.is_file() else "random init"


_digests: dict[tuple[str, int, int], str] = {}
REMEMBERED_BYTES = 64 << 20
"""Files at least this big have their digest remembered across processes (:func:`digest_cache`)."""


def digest_cache() -> Path:
    """``$CLIPDEX_CACHE/digests.json`` (default under ``$XDG_CACHE_HOME/clipdex`` or ``~/.cache/clipdex``): the
    digests of big weights files by path, size, mtime and inode, so a search does not read 600 MB to hash them."""
    if os.environ.get("CLIPDEX_CACHE"):
        return Path(os.environ["CLIPDEX_CACHE"]).expanduser() / "digests.json"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clipdex" / "digests.json"


def _remembered() -> dict[str, list]:
    try:
        data = json.loads(digest_cache().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember(path: str, stamp: list, digest: str) -> None:
    """Add one digest to the cache file (atomically; a read-only or broken cache is simply not used)."""
    cache = digest_cache()
    data = _remembered()
    data[path] = [*stamp, digest]
    tmp = cache.with_name(f".{cache.name}.tmp-{os.getpid()}")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(dict(list(data.items())[-256:])), encoding="utf-8")
        os.replace(tmp, cache)
    except OSError:
        tmp.unlink(missing_ok=True)


def file_digest(path: Path) -> str:
    """xxh3-64 of the file's bytes, remembered per (path, size, mtime) within a process, and across processes
    (with the inode too) for files of :data:`REMEMBERED_BYTES` or more."""
    import xxhash

    st = path.stat()
    resolved = str(path.resolve())
    key = (resolved, st.st_size, st.st_mtime_ns)
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    if key not in _digests and st.st_size >= REMEMBERED_BYTES:
        known = _remembered().get(resolved)
        if isinstance(known, list) and len(known) == 4 and known[:3] == stamp and isinstance(known[3], str):
            _digests[key] = known[3]
    if key not in _digests:
        digest = xxhash.xxh3_64()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
        _digests[key] = digest.hexdigest()
        if st.st_size >= REMEMBERED_BYTES:
            _remember(resolved, stamp, _digests[key])
    return _digests[key]
