"""Where a model's ONNX export lives, what its manifest says, and whether its files are sound. No torch.

An export is keyed by the model's content (:func:`export_key`: the weights' content hash, the model's
config, its name and tag). It lives beside a ``local-dir:`` model folder (``<folder>/onnx/``) where that
folder is writable, else in the cache folder (``$CLIPDEX_CACHE/onnx/<key>/``, default
``$XDG_CACHE_HOME/clipdex/onnx/<key>/`` or ``~/.cache/clipdex/onnx/<key>/``). ``manifest.json`` is written
last and names each file with its size and xxh3 hash, so a partial or damaged file is recognised.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.model import hub
from retrieval.model.source import CONFIG_NAME, model_folder
from retrieval.model.weights import LOCAL_DIR, file_digest, weights_fingerprint
from retrieval.settings import ModelSettings

EXPORT_VERSION = 1
"""Bumped when the exported graphs change: older exports are then made again."""
OPSET = 18
MANIFEST = "manifest.json"
BESIDE = "onnx"
TOWERS = ("visual", "textual")


class ExportProblem(Exception):
    """An export that is missing, damaged or cannot be made; ``str()`` is one line for the user."""


class Unexportable(ExportProblem):
    """The model's towers cannot run on ONNX Runtime (recorded in the manifest, so it is not tried again)."""


def cache_root() -> Path:
    """``$CLIPDEX_CACHE/onnx``, else ``$XDG_CACHE_HOME/clipdex/onnx``, else ``~/.cache/clipdex/onnx``."""
    if os.environ.get("CLIPDEX_CACHE"):
        return Path(os.environ["CLIPDEX_CACHE"]).expanduser() / "onnx"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clipdex" / "onnx"


def export_key(settings: ModelSettings) -> str | None:
    """The content key of the model's export, or None while its weights are not known (a hub model not
    downloaded yet). Random weights (a folder without weights) have no stable key: raises Unexportable."""
    import xxhash

    weights = weights_fingerprint(settings)
    if weights is None:
        return None
    folder = model_folder(settings)
    if not weights and (folder is not None or not settings.pretrained):
        raise Unexportable("its weights are random (no weights file), so there is nothing stable to export")
    config = b""
    if folder is not None and (folder / CONFIG_NAME).is_file():
        config = file_digest(folder / CONFIG_NAME).encode()
    name = settings.name if settings.name.startswith((LOCAL_DIR, hub.HF_HUB)) else settings.name.replace("/", "-")
    tag = "" if weights else settings.pretrained
    parts = [str(EXPORT_VERSION), name if not name.startswith(LOCAL_DIR) else "", tag, weights, config.decode()]
    return xxhash.xxh3_64("\0".join(parts).encode()).hexdigest()


def folders(settings: ModelSettings, key: str) -> list[Path]:
    """Where the export may live, in order: beside a ``local-dir:`` model (not a hub snapshot), the cache."""
    places = []
    if settings.name.startswith(LOCAL_DIR):
        folder = model_folder(settings)
        if folder is not None:
            places.append(folder / BESIDE)
    places.append(cache_root() / key)
    return places


def writable(folder: Path) -> bool:
    """Can files be created in ``folder`` (made if missing)? Tried for real: permissions, read-only mounts."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class Export:
    """One export on disk: its folder and its manifest."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def unexportable(self) -> str:
        """Why the model cannot run on ONNX Runtime ("" where it can)."""
        return str(self.manifest.get("unexportable") or "")

    def precisions(self, tower: str) -> list[str]:
        """The precisions exported for ``tower`` ("visual" or "textual")."""
        files = (self.manifest.get("towers") or {}).get(tower) or {}
        return [p for p in ("int8", "fp32") if isinstance(files.get(p), dict)]

    def entry(self, tower: str, precision: str) -> dict[str, Any]:
        return self.manifest["towers"][tower][precision]

    def path(self, tower: str, precision: str) -> Path:
        return self.folder / self.entry(tower, precision)["file"]

    def read(self, tower: str, precision: str) -> bytes:
        """The bytes of one exported graph, checked against the manifest (size, then xxh3)."""
        import xxhash

        entry, path = self.entry(tower, precision), self.path(tower, precision)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ExportProblem(f"the ONNX export {path} cannot be read ({exc.strerror or exc})") from None
        if len(data) != entry["bytes"]:
            raise ExportProblem(f"the ONNX export {path} is damaged ({len(data):,} bytes, the manifest says "
                                f"{entry['bytes']:,})")
        if xxhash.xxh3_64(data).hexdigest() != entry["xxh3"]:
            raise ExportProblem(f"the ONNX export {path} is damaged (its content hash differs from the manifest's)")
        return data

    def sizes_ok(self) -> bool:
        """Every file of the manifest is there at its size (the cheap check; :meth:`read` hashes too)."""
        for tower in TOWERS:
            for precision in self.precisions(tower):
                try:
                    if self.path(tower, precision).stat().st_size != self.entry(tower, precision)["bytes"]:
                        return False
                except OSError:
                    return False
        return True


def read_manifest(folder: Path, key: str) -> dict[str, Any] | None:
    """The manifest in ``folder`` if it is this export's (same key and version), else None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("key") != key or manifest.get("version") != EXPORT_VERSION:
        return None
    return manifest


def find_export(settings: ModelSettings) -> Export | None:
    """The export of this model on disk (its files not yet checked), or None where there is none yet."""
    key = export_key(settings)
    if key is None:
        return None
    for folder in folders(settings, key):
        manifest = read_manifest(folder, key)
        if manifest is not None:
            return Export(folder, manifest)
    return None


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace`` (never a half-written file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

