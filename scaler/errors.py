"""Errors a user can cause; the CLI prints them as one line and exits with status 2."""


class UserError(ValueError):
    """Bad input from the user: printed as one line, exit status 2."""


class RunFailed(RuntimeError):
    """A run stopped for a reason the user should read (a crashed trial or worker): one line, exit status 1."""
