"""User errors, which the command reports as one plain line, and a way to quote other errors
briefly."""


class ExportError(Exception):
    """A user error: bad flags, an unknown model or layer, weights that do not fit. The message
    says what was wrong and what to do; the command prints it without a traceback."""


def first_line(e: Exception) -> str:
    """The first non-empty line of an exception's message (TorchScript's run to pages)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__
