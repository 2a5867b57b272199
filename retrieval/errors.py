"""The one exception type clipdex raises for problems a user can fix."""


class ClipdexError(Exception):
    """A user-facing error: its message is printed as one line, without a traceback."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is empty."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
