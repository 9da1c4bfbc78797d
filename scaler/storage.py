"""Optuna storage URLs: the default embedded SQLite file, any RDB URL, errors without passwords."""
from __future__ import annotations

import re
from pathlib import Path

from scaler.errors import UserError

STUDIES_DIR = Path("studies")


def redact(url: str) -> str:
    """The URL with any password replaced by ***."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def default_url(study: str, studies_dir: Path = STUDIES_DIR) -> str:
    """sqlite:///studies/<study>/study.db (the folder is created)."""
    folder = studies_dir / study
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'study.db'}"


def check_url(url: str) -> None:
    """One-line error for a URL that is not an RDB URL SQLAlchemy can parse."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise UserError(f"--storage {redact(url)!r} is not a database URL (e.g. sqlite:///path.db, postgresql://user@host/db)") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql", "mysql", "oracle", "mssql"):
        raise UserError(f"--storage {redact(url)!r}: unsupported database {parsed.get_backend_name()!r}")


def describe_error(error: BaseException, url: str) -> str:
    """First line of a storage error, with the URL's password hidden."""
    text = str(getattr(error, "orig", None) or error).strip().splitlines()
    first = text[0] if text else type(error).__name__
    match = re.search(r"://\S+", url)
    if match:
        first = first.replace(match.group(0), redact(match.group(0)))
    password = re.search(r"://[^:/@]*:([^@]*)@", url)
    if password and password.group(1):
        first = first.replace(password.group(1), "***")
    return first[:300]
