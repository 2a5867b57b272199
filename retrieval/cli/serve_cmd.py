"""``clipdex serve``: the search API and web page over HTTP (see retrieval.server)."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

import click

from retrieval.cli.common import Run, cli, common_options, echo, json_text
from retrieval.errors import ClipdexError

if TYPE_CHECKING:
    from retrieval.serving.store_guard import StoreGuard

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


class _Stopped(Exception):
    """SIGTERM arrived: leave the server loop and close the index cleanly."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (the server is then reachable only from this machine)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket, or a one-line :class:`ClipdexError` (port in use, unknown host, ...)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ClipdexError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ClipdexError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


@contextmanager
def _sigterm_stops() -> Iterator[None]:
    def stop(signum: int, frame: object) -> None:
        raise _Stopped

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def watched_roots(paths: list[str]) -> list[str]:
    """Absolute, distinct watched folders (a folder inside another watched one is covered by it)."""
    roots = list(dict.fromkeys(os.path.abspath(os.path.expanduser(p)) for p in paths))
    for root in roots:
        if os.path.exists(root) and not os.path.isdir(root):  # ([serve] watch; --watch is checked by click)
            raise ClipdexError(f"watch needs a folder, not a file: {root}")
    return [r for r in roots if not any(r != o and r.startswith(o.rstrip("/") + "/") for o in roots)]


def _watch_line(root: str, problem: str) -> str:
    """What ``serve`` says about a watched folder at start, in plain words."""
    if problem.startswith("missing"):
        return (f"waiting for {root} to appear (it does not exist now; its points are kept, and it is ingested "
                "as soon as it is there)")
    if problem.startswith("empty"):
        return f"watching {root} (empty for now: new files are ingested as they arrive)"
    return f"watching {root}" + (f" (now {problem}: its points are kept)" if problem else "")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback exposes your indexed images to the network.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="TCP port.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True, help="Server log level (info logs each request).")
@click.option("--insecure", is_flag=True,
              help="Allow a non-loopback --host without an API key ([serve] api_key or CLIPDEX_API_KEY).")
@click.option("--watch", "watch", multiple=True, type=click.Path(file_okay=False, path_type=str), metavar="DIR",
              help="Keep DIR ingested while serving: a sync at start, then on every change (repeatable; "
                   "adds to [serve] watch).")
@common_options
def serve(run: Run, host: str, port: int, log_level: str, insecure: bool, watch: tuple[str, ...]) -> None:
    """Serve the search API and a web page (http://127.0.0.1:8000/ by default).

    With --json, one JSON line on stdout once it listens: {"url", "collection", "points", "pid", "watch"}.
    """
    keyed = bool(run.settings.serve.api_key)
    if not is_loopback(host) and not keyed and not insecure:
        raise ClipdexError(f"refusing to serve on {host} without an API key: set [serve] api_key or "
                           "CLIPDEX_API_KEY (clients then send 'Authorization: Bearer KEY'), or pass --insecure")
    import uvicorn

    from retrieval.changes import root_problem
    from retrieval.index import Index
    from retrieval.server import create_app
    from retrieval.serving.protocol import Timeouts, uvicorn_config
    from retrieval.store.lock import serve_owner

    roots = watched_roots([*run.settings.serve.watch, *watch])
    sock = listen(host, port)
    guard: StoreGuard | None = None
    try:
        with Index.open(run.settings, create=bool(roots), owner=serve_owner(url_of(sock).rstrip("/"))) as index:
            index.encoder  # noqa: B018  (load the model now: fail fast, and the first search is quick)
            info = index.status()
            hosts = [*LOOPBACK_NAMES, host] if is_loopback(host) else None
            app = create_app(index, allowed_hosts=hosts, watch=roots)
            guard = app.state.service.store_guard
            echo(f"clipdex: serving collection '{info['collection']}' ({info['points']} images) "
                       f"at {url_of(sock)}  (Ctrl-C stops)", err=True)
            for root in roots:
                echo(f"clipdex: {_watch_line(root, root_problem(root))}", err=True)
            if run.json:  # for scripts: one line on stdout once the socket listens (requests queue until served)
                echo(json_text({"url": url_of(sock), "collection": info["collection"], "points": info["points"],
                                      "pid": os.getpid(), "watch": roots}))
                sys.stdout.flush()
            if not is_loopback(host) and not keyed:
                echo(f"clipdex: warning: {host} is not a loopback address and no API key is set "
                           "(--insecure): anyone who can reach it can search and view the indexed images", err=True)
            elif not is_loopback(host):
                echo("clipdex: note: the API key travels in clear text over plain HTTP; put a TLS proxy in "
                           "front for untrusted networks", err=True)
            config = uvicorn_config(app, log_level=log_level, access_log=log_level in ("info", "debug"),
                                    timeouts=Timeouts.of(run.settings.serve))
            with _sigterm_stops(), suppress(KeyboardInterrupt, _Stopped):
                uvicorn.Server(config).run(sockets=[sock])
    except Exception:
        problem = guard.problem() if guard is not None else None
        if problem is None:
            raise
        echo(f"clipdex: warning: {problem}; nothing was saved", err=True)  # closing the ghost failed
    finally:
        sock.close()
    echo("clipdex: server stopped", err=True)
