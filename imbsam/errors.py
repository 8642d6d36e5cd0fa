"""The one exception type for bad input a user can fix."""


class InputError(Exception):
    """Bad input: the message names the problem and how to fix it, on one line.

    Stages print it without a traceback and exit non-zero, before any expensive work.
    """


def one_line(error):
    """An exception's message (or an URLError's reason) on one line, for an InputError."""
    reason = getattr(error, "reason", None) or error
    return " ".join(str(reason).split()) or type(error).__name__
