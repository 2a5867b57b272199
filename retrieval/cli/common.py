"""The click group and the options every subcommand shares."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from retrieval.names import collection_problem
from retrieval.settings import Settings, load_settings


@dataclass(frozen=True)
class Run:
    """What a subcommand gets: the resolved settings and the output mode."""

    settings: Settings
    json: bool

    def emit(self, obj: Any, human: Callable[[], None]) -> None:
        """Print ``obj`` as one JSON document with ``--json``, else call ``human``."""
        if self.json:
            click.echo(json.dumps(obj, ensure_ascii=False))
        else:
            human()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="clipdex")
def cli() -> None:
    """clipdex: search image collections by text and by example image."""


def collection_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A click callback: a ``--collection``-like value that is no safe collection name is a usage error."""
    problem = collection_problem(value) if value is not None else ""
    if problem:
        raise click.BadParameter(problem)
    return value


def common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add --config/--store/--qdrant-url/--collection/--json and pass a :class:`Run` first."""

    @click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                  help="TOML settings file (default: built-in defaults, or $CLIPDEX_CONFIG).")
    @click.option("--store", "store_path", default=None, help="Embedded store directory [env CLIPDEX_STORE].")
    @click.option("--qdrant-url", default=None, help="Use a Qdrant server at this URL [env CLIPDEX_QDRANT_URL].")
    @click.option("--collection", default=None, callback=collection_option,
                  help="Collection name (1-64 letters, digits, '.', '_', '-').")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
    @functools.wraps(fn)
    def wrapper(*args: Any, config_file: str | None, store_path: str | None, qdrant_url: str | None,
                collection: str | None, as_json: bool, **kwargs: Any) -> Any:
        settings = load_settings(config_file).with_overrides(
            store={"path": store_path, "url": qdrant_url, "collection": collection})
        return fn(Run(settings, as_json), *args, **kwargs)

    return wrapper
