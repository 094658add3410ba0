"""User-facing errors.

`MinillamaError` is raised for every mistake a user can fix (a missing file, a
wrong flag value, a malformed data line).  The CLI catches it and prints its
message as one line, without a traceback; library users can catch it too.
Programming errors stay ordinary exceptions with tracebacks.
"""


class MinillamaError(Exception):
    """A problem with the user's input: the message says what and how to fix it."""
