"""A real, throwaway PostgreSQL server from Debian's packages for tests that need an RDB server."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN_GLOB = "/usr/lib/postgresql/*/bin"
TOOLS = ("initdb", "pg_ctl", "postgres")


def find_bindir() -> Path | None:
    """The newest Debian /usr/lib/postgresql/<version>/bin with initdb, pg_ctl and postgres; else PATH's."""

    def version(path: str) -> float:
        name = Path(path).parent.name
        try:
            return float(name)
        except ValueError:
            return 0.0

    for folder in sorted(glob.glob(BIN_GLOB), key=version, reverse=True):
        if all((Path(folder) / tool).is_file() for tool in TOOLS):
            return Path(folder)
    found = shutil.which("pg_ctl")
    if found and all((Path(found).parent / tool).is_file() for tool in TOOLS):
        return Path(found).parent
    return None


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """initdb + pg_ctl in a temporary folder, listening on 127.0.0.1 only, trust auth for `postgres`."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="scaler-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "server.log"
        self.sockets.mkdir()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            user = pwd.getpwnam("postgres")
            for path in (self.root, self.sockets):
                os.chown(path, user.pw_uid, user.pw_gid)
        self.root.chmod(0o755)
        self.port = 0
        self.started = False

    def command(self, tool: str, *args: str) -> list[str]:
        """argv for a server tool, run as the postgres user when we are root (postgres refuses root)."""
        argv = [str(self.bindir / tool), *args]
        return ["runuser", "-u", "postgres", "--", *argv] if self.as_root else argv

    def run(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a server tool; its output in the error if it fails."""
        result = subprocess.run(
            self.command(tool, *args), capture_output=True, text=True, timeout=timeout, cwd=self.root
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n{log}"
            )
        return result

    def start(self) -> None:
        """initdb (trust auth) and start on a free loopback port, retrying if the port was taken meanwhile."""
        self.run("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        for attempt in range(3):
            self.port = free_port()
            options = (
                f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
            )
            try:
                self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")
            except RuntimeError:
                if attempt == 2:
                    raise
                continue
            self.started = True
            return

    def stop(self) -> None:
        """pg_ctl stop -m fast, then remove the folder."""
        try:
            if self.started:
                subprocess.run(
                    self.command("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop"),
                    capture_output=True,
                    timeout=60,
                    cwd=self.root,
                )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy/Optuna URL of one database on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the whole session; skipped only when the binaries are absent."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(f"postgres binary not found in {BIN_GLOB} or PATH: install Debian's postgresql")
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture()
def postgres_url(postgres_server: PostgresServer) -> str:
    """URL of a fresh database on the session's server, so tests never share studies."""
    return postgres_server.create_database()
