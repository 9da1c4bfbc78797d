"""A storage password reaches no file the project writes, no stored attribute, and no line on the terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from conftest import FAST

from scaler.experiments.search.config import SearchConfig
from scaler.report.files import provenance
from scaler.study.storage import redact, redact_secrets

SECRET = "pw-s3cret:x"  # a ':' inside the password, as a careless user might type


@pytest.mark.parametrize(
    "text,expected",
    [
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p@w@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p w@h/db", "postgresql://u:***@h/db"),
        ("--storage=postgresql://u:pw@h/db", "--storage=postgresql://u:***@h/db"),
        (
            "scaler search --storage mysql+pymysql://u:pw@h:5/db --x a@b",
            "scaler search --storage mysql+pymysql://u:***@h:5/db --x a@b",
        ),
        ("postgresql://u@h/db?password=pw&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require"),
        ("sqlite:///studies/s/study.db", "sqlite:///studies/s/study.db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
    ],
)
def test_redact_hides_every_form_of_url_password(text: str, expected: str) -> None:
    """Inline passwords (with raw '@', ':' or spaces), query-string passwords, inside a longer command line."""
    assert redact(text) == expected


def test_provenance_redacts_command_argv_and_config() -> None:
    """run.json's record, built from a config whose argv and storage hold the password, holds none of it."""
    url = f"postgresql://postgres:{SECRET}@127.0.0.1:5432/db"
    argv = ("search", "--storage", url, "--workers", "2")
    config = SearchConfig(storage=url, argv=argv)
    record = provenance(config, argv, 0.0, [], {"storage": url})
    assert SECRET not in json.dumps(record)
    assert "postgresql://postgres:***@127.0.0.1:5432/db" in record["command"]
    assert redact_secrets(config.to_json())["argv"][2] == "postgresql://postgres:***@127.0.0.1:5432/db"


def database_text(url: str) -> str:
    """Every row of every table in the database, as text."""
    with psycopg.connect(url, connect_timeout=10) as connection:
        tables = [
            row[0]
            for row in connection.execute("select tablename from pg_tables where schemaname = 'public'").fetchall()
        ]
        return "\n".join(
            repr(connection.execute(f'select * from "{table}"').fetchall())  # noqa: S608 - names from the catalogue
            for table in tables
        )


def test_search_on_postgresql_with_a_password_writes_it_nowhere(postgres_url: str, tmp_path: Path) -> None:
    """`scaler search --storage postgresql://USER:PASSWORD@... --workers 2` to the end: the password is in no file
    under the working folder, no table of the study's database, and no line the command printed."""
    with_password = postgres_url.replace("://postgres@", f"://postgres:{SECRET}@")
    args = ["search", "--study", "pw", "--storage", with_password, "--workers", "2", *FAST]
    result = subprocess.run(
        [sys.executable, "-m", "scaler.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert SECRET not in output
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    names = {path.name for path in written}
    assert {"run.json", "summary.json", "trials.csv", "search.png"} <= names, names
    leaking = [str(path) for path in written if SECRET.encode() in path.read_bytes()]
    assert not leaking, leaking
    stored = database_text(postgres_url)
    assert "search" in stored and SECRET not in stored
    run_json = json.loads((tmp_path / "studies" / "pw" / "run.json").read_text())
    assert redact(with_password) in run_json["command"] and run_json["config"]["storage"] == redact(with_password)
