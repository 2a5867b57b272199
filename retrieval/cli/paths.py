"""``clipdex search --paths``: only the matching paths, one per line, for ``xargs -d '\\n'``, ``feh -f -`` and the like.

A path is printed exactly as stored or not at all: one holding a newline, a tab or another control character
(C0, DEL or C1) would split or garble a line-based pipe and could carry terminal escapes, so it is left out,
named on stderr in an escaped form, and the command ends with an error line (exit 1) once the other
paths are printed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import click

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def pipe_safe(path: str) -> bool:
    """True if ``path`` holds no control character, so one line of output is exactly one path."""
    return _CONTROL.search(path) is None


def echo_paths(rows: Iterable[dict[str, Any]]) -> int:
    """Print each row's path on its own line (best first); the number of paths left out."""
    left_out = 0
    for row in rows:
        path = str(row.get("path", ""))
        if pipe_safe(path):
            click.echo(path)
        else:
            left_out += 1
            shown = path.encode("unicode_escape", "backslashreplace").decode("ascii")
            click.echo(f"clipdex: left out a path with a control character (shown escaped): {shown}", err=True)
    return left_out
