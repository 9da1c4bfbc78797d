"""Errors a user can cause; the CLI prints them as one line and exits with status 2."""

from __future__ import annotations

from pathlib import Path


class UserError(ValueError):
    """Bad input from the user: printed as one line, exit status 2."""


class RunFailed(RuntimeError):
    """A run stopped for a reason the user should read (a crashed trial or worker): one line, exit status 1."""


def shown_path(path: Path | str, limit: int = 80) -> str:
    """A path for a one-line message: cut in the middle when long."""
    text = str(path)
    return text if len(text) <= limit else f"{text[: limit // 2]}...{text[-limit // 2 :]}"


def one_line(error: BaseException, limit: int | None = None) -> str:
    """An error's text on one line, cut at `limit` characters when given."""
    return " ".join(str(error).split())[:limit]
