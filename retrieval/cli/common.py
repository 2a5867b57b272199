"""The click group and the options every subcommand shares."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from retrieval import hints
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
            click.echo(json_text(obj))
        else:
            human()


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
"""What a terminal may act on instead of showing: C0 and C1 controls (newline, ESC), DEL, line and
paragraph separators, bidirectional overrides and marks (and lone surrogates, which cannot be printed)."""
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` (a file name, a line) as a terminal shows it faithfully: controls escaped (``\\n``, ``\\x1b``,
    ``\\u202e``), everything else as it is. Text output only; ``--json`` keeps the exact values."""
    return _CONTROL.sub(_escape, text) if not text.isprintable() else text


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def echo(line: str, *, err: bool = False, nl: bool = True) -> None:
    """Print one line of text output, through :func:`printable` (``nl=False``: a prompt, no newline)."""
    click.echo(printable(line), err=err, nl=nl)


def json_text(obj: Any) -> str:
    """``obj`` as one JSON line: exact values; characters a terminal would act on as ``\\uXXXX`` escapes."""
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(obj, ensure_ascii=False))


COMMANDS: dict[str, str] = {
    "ingest": "index_cmds", "search": "index_cmds", "status": "index_cmds", "rebuild": "index_cmds",
    "train": "learn_cmds", "distill": "learn_cmds", "eval": "learn_cmds", "model": "model_cmds",
    "serve": "serve_cmd", "duplicates": "dup_cmds", "concept": "concept_cmds"}
"""Which module of retrieval.cli defines each subcommand: imported only when that command runs (or for the
full --help), so `clipdex search` does not pay for the imports of training, serving or duplicates."""


class LazyGroup(click.Group):
    """A click group whose subcommands' modules are imported on first use (:data:`COMMANDS`); a module
    registers its commands on :data:`cli` as it is imported."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            import importlib

            importlib.import_module(f"retrieval.cli.{COMMANDS[cmd_name]}")
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
        hints.remember(config=config_file, store=store_path, qdrant_url=qdrant_url, collection=collection)
        settings = load_settings(config_file).with_overrides(
            store={"path": store_path, "url": qdrant_url, "collection": collection})
        return fn(Run(settings, as_json), *args, **kwargs)

    return wrapper
