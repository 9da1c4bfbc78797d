"""Shared fixtures: a real PostgreSQL server (see tests/pg.py)."""

from __future__ import annotations

from pg import postgres_server, postgres_url  # noqa: F401
