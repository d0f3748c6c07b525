"""The one exception type for mistakes a user can cause (bad config, bad data row, missing file)."""


class UserError(Exception):
    """A mistake the user can fix. The CLI prints its message as one line and exits 2.

    The message must name the file, row or key at fault, e.g. ``runs.jsonl:12: 'labels' has 3 items, 'completions' 4``.
    """


def shown(value: object, limit: int = 200) -> str:
    """``repr(value)`` for a one-line error message, cut to ``limit`` characters (hostile input stays one short line)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
