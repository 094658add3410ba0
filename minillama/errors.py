"""User-facing errors.

`MinillamaError` is raised for every mistake a user can fix (a missing file, a
wrong flag value, a malformed data line).  The CLI catches it and prints its
message as one line, without a traceback; library users can catch it too.
Programming errors stay ordinary exceptions with tracebacks.
"""


import sys
import warnings


class MinillamaError(Exception):
    """A problem with the user's input: the message says what and how to fix it."""


class MinillamaWarning(UserWarning):
    """Something the user may want to know that does not stop the run (another base model)."""


def warn(message: str):
    """Warn through Python's warnings (so library users and tests can filter or catch it);
    the CLI shows it as one line, `warning: ...` (show_one_line)."""
    warnings.warn(message, MinillamaWarning, stacklevel=2)


def show_one_line(message, category, filename, lineno, file=None, line=None):
    """warnings.showwarning for the CLI: minillama's warnings as `warning: <message>` on stderr,
    without Python's file:line and source line; any other warning as Python shows it."""
    file = file or sys.stderr
    if issubclass(category, MinillamaWarning):
        file.write(f"warning: {message}\n")
    else:
        file.write(warnings.formatwarning(message, category, filename, lineno, line))
