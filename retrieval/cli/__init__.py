"""The ``clipdex`` command: a thin shell over the library (see retrieval.index, retrieval.training)."""

from __future__ import annotations

import os
import sys

import click

from retrieval.cli.common import cli, echo
from retrieval.errors import ClipdexError, library_error_line, os_error_line

# Subcommands register themselves on `cli` when their module is imported: the group imports a command's
# module only when that command runs (retrieval.cli.common.COMMANDS), so a search pays for no other command.


def main(argv: list[str] | None = None) -> int:
    """Entry point: every failure becomes one line on stderr and a non-zero exit code."""
    try:
        code = cli.main(args=argv, prog_name="clipdex", standalone_mode=False)
        if isinstance(code, int) and code:  # a command's click.exceptions.Exit(N), returned by click
            return code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        click.echo("clipdex: aborted", err=True)
        return 130
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "clipdex"
        echo(f"{command}: error: {exc.format_message()}", err=True)
        return 2
    except ClipdexError as exc:
        echo(f"clipdex: error: {exc}", err=True)
        return 1
    except OSError as exc:  # a path that cannot be used (permissions, /proc, a full disk, a name too long)
        echo(f"clipdex: error: {os_error_line(exc)}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("clipdex: interrupted", err=True)
        return 130
    except BaseException as exc:  # last resort: still one line unless debugging
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise  # SystemExit, GeneratorExit; a Rust panic (pyo3's PanicException) is answered below
        if os.environ.get("CLIPDEX_DEBUG"):
            raise
        if said := library_error_line(exc):  # a library about the user's data or surroundings, not our bug
            echo(f"clipdex: error: {said} (CLIPDEX_DEBUG=1 shows the traceback)", err=True)
            return 1
        line = str(exc).splitlines()[0] if str(exc) else ""
        echo(f"clipdex: internal error: {type(exc).__name__}: {line} (CLIPDEX_DEBUG=1 shows the traceback)",
                   err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
