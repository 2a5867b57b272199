"""The one exception type clipdex raises for problems a user can fix."""


class ClipdexError(Exception):
    """A user-facing error: its message is printed as one line, without a traceback."""
