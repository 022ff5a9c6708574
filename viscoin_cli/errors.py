"""The one exception type for user mistakes, and how any error becomes one line.

Anything the user can fix (a missing file, a bad option value, a checkpoint of the wrong kind)
raises `UserError` with a one-line message; the CLI prints it as `error: <message>` and exits 2.
Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re

# How long a torchrun process that leaves an error's report to another process waits before it exits, so that
# torchrun, which stops every process once one fails, does not stop the reporter before it has printed. Here,
# torch-free, for both the CLI's usage errors (cli/app.py) and the runtime's (runtime.report_here).
QUIET_EXIT_WAIT_S = 10


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


def one_line(err: BaseException | str, limit: int | None = None) -> str:
    """The message of `err` on one line, cut to `limit` characters when given.

    An exception raised in a DataLoader worker is re-raised in the main process with the worker's
    traceback glued into its message; the user only needs the last line of it. `limit` keeps messages
    quoted from foreign files (a corrupt pickle) from flooding the terminal.
    """
    text = err if isinstance(err, str) else str(err)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "error" if isinstance(err, str) else type(err).__name__
    if len(lines) > 1 and lines[0].startswith("Caught ") and not isinstance(err, str):
        # the last line is "Name: message" or, for our own classes, "package.module.Name: message"
        last = lines[-1]
        name = re.escape(type(err).__name__)
        text = re.sub(rf"^(?:[\w.]+\.)?{name}: ", "", last)
    else:
        text = " ".join(" ".join(line.split()) for line in lines)
    return text[:limit] + "..." if limit is not None and len(text) > limit else text
