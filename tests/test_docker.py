"""The docker files, checked structurally (no Docker engine here): services, volumes, URLs, keys,
healthchecks, and no port published beyond 127.0.0.1 unless the user asks for it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from retrieval import load_settings
from retrieval.store import index_config

DOCKER = Path(__file__).resolve().parent.parent / "docker"
REPO = DOCKER.parent
_VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((DOCKER / name).read_text())


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` (raises LookupError)."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if op and op.endswith("?"):
            raise LookupError(f"{name}: {arg}")
        return arg if op and op.endswith("-") else ""

    return _VAR.sub(one, value)


def published(service: dict[str, Any], env: dict[str, str]) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of each published port ("" = all interfaces)."""
    out = []
    for port in service.get("ports", []):
        assert isinstance(port, str), "long-form port mappings are not used here"
        parts = interpolate(port, env).split(":")
        if len(parts) == 2:
            parts = ["", *parts]
        out.append((parts[0], int(parts[1]), int(parts[2])))
    return out


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict)
    return {k: str(v) for k, v in env.items()}


def _healthy(service: dict[str, Any], port: int) -> None:
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD" and any(str(port) in part for part in test[1:])
    assert service["healthcheck"]["retries"] >= 1


def _named_volumes(service: dict[str, Any], compose: dict[str, Any]) -> dict[str, str]:
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if not source.startswith(("/", ".", "$", "~")):
            assert source in compose["volumes"], f"volume {source} is not declared"
            mounts[source] = target
    return mounts


REQUIRED_KEY = "${QDRANT_API_KEY:?"


def test_compose_runs_qdrant_with_a_required_key_on_loopback():
    compose = _load("compose.yaml")
    assert set(compose["services"]) == {"qdrant", "clipdex"}
    qdrant = compose["services"]["qdrant"]
    assert qdrant["image"].startswith("qdrant/qdrant:v")
    assert "/qdrant/storage" in _named_volumes(qdrant, compose).values()
    key = _env(qdrant)["QDRANT__SERVICE__API_KEY"]
    assert key.startswith(REQUIRED_KEY)
    with pytest.raises(LookupError):  # compose refuses to start without a key
        interpolate(key, {})
    ports = published(qdrant, {})
    assert ports and all(host == "127.0.0.1" for host, _, _ in ports)
    assert {c for _, _, c in ports} == {6333, 6334}
    _healthy(qdrant, 6333)
    assert "/readyz" in " ".join(qdrant["healthcheck"]["test"])  # the probe Qdrant answers without a key


def test_compose_serves_clipdex_watching_the_photos_against_that_qdrant():
    compose = _load("compose.yaml")
    clipdex, qdrant = compose["services"]["clipdex"], compose["services"]["qdrant"]
    env = _env(clipdex)
    url = env["CLIPDEX_QDRANT_URL"]
    host, port = re.fullmatch(r"http://([\w-]+):(\d+)", url).groups()
    assert host == "qdrant" and int(port) in {c for _, _, c in published(qdrant, {})}
    assert env["CLIPDEX_QDRANT_API_KEY"] == _env(qdrant)["QDRANT__SERVICE__API_KEY"]  # one key, both sides
    assert env["CLIPDEX_API_KEY"].startswith("${CLIPDEX_API_KEY:?")  # serve's own key, required
    assert clipdex["depends_on"]["qdrant"]["condition"] == "service_healthy"

    command = clipdex["command"]
    assert command[0] == "serve"
    watched = command[command.index("--watch") + 1]
    mounts = [interpolate(v, {"PHOTOS": "/home/me/Pictures"}).split(":") for v in clipdex["volumes"]]
    assert [m for m in mounts if m[1] == watched] == [["/home/me/Pictures", watched, "ro"]]  # read-only
    with pytest.raises(LookupError):  # no photo folder, no start
        interpolate(next(v for v in clipdex["volumes"] if "PHOTOS" in v), {})
    serve_port = int(command[command.index("--port") + 1])
    assert command[command.index("--host") + 1] == "0.0.0.0"  # inside the container; published below
    assert published(clipdex, {}) == [("127.0.0.1", serve_port, serve_port)]
    assert published(clipdex, {"CLIPDEX_BIND": "0.0.0.0"})[0][0] == "0.0.0.0"  # only when asked for
    _healthy(clipdex, serve_port)
    assert "CLIPDEX_API_KEY" in " ".join(clipdex["healthcheck"]["test"])

    build = clipdex["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    assert "TORCH_INDEX_URL" in build["args"]


def test_gpu_variant_reserves_nvidia_gpus_and_sets_the_build_argument():
    base, gpu = _load("compose.yaml"), _load("compose.gpu.yaml")
    assert set(gpu["services"]) <= set(base["services"])
    clipdex = _merged(base["services"]["clipdex"], gpu["services"]["clipdex"])
    devices = clipdex["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert clipdex["build"]["args"]["TORCH_INDEX_URL"].startswith("${TORCH_INDEX_URL:?")
    assert clipdex["command"] == base["services"]["clipdex"]["command"]  # the same serve, on a GPU
    assert clipdex["image"] != base["services"]["clipdex"]["image"]


def test_dockerfile_copies_what_exists_and_takes_the_torch_build_argument():
    lines = (DOCKER / "Dockerfile").read_text().splitlines()
    assert any(line.startswith("ARG TORCH_INDEX_URL") for line in lines)
    for line in lines:
        if line.startswith("COPY "):
            for source in shlex.split(line)[1:-1]:
                assert (REPO / source).exists(), source
    assert any(line.startswith("USER ") and "root" not in line for line in lines)


def test_cluster_runs_three_keyed_nodes_with_one_loopback_entry():
    cluster = _load("cluster.yml")
    nodes = cluster["services"]
    assert sorted(nodes) == ["qdrant-1", "qdrant-2", "qdrant-3"]
    keys = set()
    entry = []
    for name, node in nodes.items():
        env = _env(node)
        assert env["QDRANT__CLUSTER__ENABLED"] == "true"
        keys.add(env["QDRANT__SERVICE__API_KEY"])
        assert list(_named_volumes(node, cluster).values()) == ["/qdrant/storage"]
        _healthy(node, 6333)
        command = node["command"]
        assert command[command.index("--uri") + 1] == f"http://{name}:6335"
        if "--bootstrap" in command:
            assert command[command.index("--bootstrap") + 1] == "http://qdrant-1:6335"
            assert node["depends_on"]["qdrant-1"]["condition"] == "service_healthy"
        for host, host_port, _ in published(node, {}):
            assert host == "127.0.0.1"
            entry.append((name, host_port))
    assert len(keys) == 1 and next(iter(keys)).startswith(REQUIRED_KEY)
    assert len({v for n in nodes.values() for v in _named_volumes(n, cluster)}) == 3  # one volume per node
    assert ("qdrant-1", 6333) in entry and {n for n, _ in entry} == {"qdrant-1"}  # p2p 6335 never published


def test_cluster_settings_shard_and_replicate_across_the_three_nodes():
    settings = load_settings(DOCKER / "cluster.toml")
    cluster = _load("cluster.yml")
    port = int(re.fullmatch(r"http://127\.0\.0\.1:(\d+)", settings.store.url).group(1))
    assert ("127.0.0.1", port, 6333) in published(cluster["services"]["qdrant-1"], {})
    nodes = len(cluster["services"])
    assert settings.store.shard_number >= nodes and settings.store.shard_number % nodes == 0
    assert 2 <= settings.store.replication_factor <= nodes
    assert settings.store.write_consistency_factor <= settings.store.replication_factor
    assert settings.store.api_key == ""  # the key comes from the environment, never from a file
    assert settings.ray.address == "auto"
    config = index_config(settings)  # what ServerStore.create sends with the collection
    assert (config.shards, config.replicas, config.write_consistency) == (
        settings.store.shard_number, settings.store.replication_factor, settings.store.write_consistency_factor)


def test_no_file_still_points_at_the_retired_compose_file():
    assert not (DOCKER / "docker-compose.yml").exists()
    for path in [REPO / "README.md", *REPO.glob("docs/*.md"), *DOCKER.iterdir()]:
        assert "docker-compose.yml" not in path.read_text(), path
