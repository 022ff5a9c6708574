"""The one exception type for user mistakes.

Anything the user can fix (a missing file, a bad option value, a checkpoint of the wrong kind)
raises `UserError` with a one-line message; the CLI prints it as `error: <message>` and exits 2.
Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""
