"""The one exception type clipdex raises for problems a user can fix."""


class ClipdexError(Exception):
    """A user-facing error: its message is printed as one line, without a traceback."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is empty."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error on a path the user named: what failed, and where."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    name = exc.filename if exc.filename is not None else ""
    where = f": {name!s}" if name != "" else ""
    if exc.filename2 is not None:
        where += f" -> {exc.filename2!s}"
    return f"{reason[:1].lower()}{reason[1:]}{where}"
