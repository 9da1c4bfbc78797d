"""Optuna storage: URLs and study names checked in one line, the atomic queue of jobs, a lock per study."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from scaler.compat import rdb_engine, rdb_trial_model, study_storage, trial_id_of
from scaler.errors import UserError, shown_path

STUDIES_DIR = Path("studies")
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
OPTUNA_TABLES = {"studies", "trials", "version_info"}
INTERRUPTED = "interrupted"  # user attribute of a trial stopped from outside; its job is queued again
FAILURE = "failure"  # user attribute: why a run failed on its own merits (its loss diverged); final, never re-queued


def check_study_name(name: str, option: str = "--study") -> str:
    """A study name safe as one folder under studies/: letters, digits, '.', '_', '-', at most 80 characters."""
    if not STUDY_NAME.fullmatch(name) or set(name) == {"."}:
        shown = name if len(name) <= 40 and name.isprintable() else repr(name[:40]) + "..."
        raise UserError(
            f"{option} {shown!r} is not a study name: use 1-80 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def study_folder(name: str, studies_dir: Path = STUDIES_DIR, option: str = "--study") -> Path:
    """studies/<name>, checked to stay inside the studies folder (nothing is created)."""
    folder = studies_dir / check_study_name(name, option)
    if not folder.resolve().is_relative_to(studies_dir.resolve()):
        raise UserError(f"study {name!r} would live outside {studies_dir}")
    return folder


WHOLE_URL_PASSWORD = re.compile(r"^((?:--[\w-]+=)?[A-Za-z][\w+.-]*://[^:/@]*:).*@")  # a URL argument, spaces and all
URL_PASSWORD = re.compile(r"(://[^:/@\s'\"]*:)[^\s'\"]*@")  # inside text: up to the word's last '@'
QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pwd)=)[^&\s'\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` (a URL, a command-line argument, a message) with every URL password, inline or as a query
    parameter, replaced by *** (up to the last '@', so a raw '@' in a password stays hidden)."""
    text = WHOLE_URL_PASSWORD.sub(r"\1***@", text)
    return QUERY_PASSWORD.sub(r"\1***", URL_PASSWORD.sub(r"\1***@", text))


def redact_secrets(value: Any) -> Any:
    """`value` (JSON-like: dicts, lists, tuples, strings) with `redact` applied to every string in it, keys too."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_secrets(key): redact_secrets(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_secrets(item) for item in value)
    return value


def check_writable(target: Path, what: str) -> None:
    """One line naming `target` unless this process can make it (or write in it): every existing part of the path is
    a folder, and a scratch folder can be made and removed in the nearest existing one (root included)."""
    try:
        existing = target
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise UserError(
                f"{what} {shown_path(target)} cannot be made: {shown_path(existing)} is a file, not a folder; "
                "move it away or choose another name"
            )
        os.rmdir(tempfile.mkdtemp(prefix=".scaler-probe-", dir=existing))
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UserError(
            f"cannot write {what} {shown_path(target)} ({reason} in {shown_path(existing)}); "
            "choose a folder you can write, or fix its permissions"
        ) from None


def default_url(study: str, studies_dir: Path = STUDIES_DIR) -> str:
    """sqlite:///studies/<study>/study.db (nothing is created)."""
    return f"sqlite:///{study_folder(study, studies_dir) / 'study.db'}"


def sqlite_path(url: str) -> Path | None:
    """The database file of an sqlite URL; None for other backends and in-memory databases."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def check_url(url: str, must_exist: bool = False, schema: bool = True) -> None:
    """One line for a URL SQLAlchemy cannot parse, a raw '@' in a password, or an SQLite file that is not Optuna's."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise UserError(
            f"--storage {redact(url)!r} is not a database URL (e.g. sqlite:///path.db, postgresql://user@host/db)"
        ) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql", "mysql"):
        raise UserError(
            f"--storage {redact(url)!r}: unsupported database {parsed.get_backend_name()!r} (sqlite, postgresql or mysql)"
        )
    try:
        parsed.get_dialect().import_dbapi()
    except ImportError as error:
        raise UserError(
            f"--storage {redact(url)!r}: the {parsed.get_backend_name()} driver {error.name or ''} is not installed "
            "(pip install it, or use sqlite:///path.db or postgresql://, whose driver scaler installs)"
        ) from None
    netloc = url.split("://", 1)[1].split("/", 1)[0] if "://" in url else ""
    if netloc.count("@") > 1:
        raise UserError(f"--storage {redact(url)!r}: the password holds a raw '@'; write it as %40")
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise UserError(
            f"--storage {url!r} is an in-memory database, lost when the command ends and invisible to workers: "
            "give a file, e.g. sqlite:///studies/NAME/study.db"
        )
    path = sqlite_path(url)
    if path is not None:
        check_sqlite_file(path, must_exist, schema)


def check_sqlite_file(path: Path, must_exist: bool, schema: bool = True) -> None:
    """Refuse a missing file (when it must exist), a path that cannot be written, a file that is not SQLite, and an
    SQLite file of another program."""
    try:
        missing = not path.exists() or path.stat().st_size == 0
    except OSError as error:
        raise UserError(f"--storage path {shown_path(path)}: {error.strerror or error}") from None
    if missing and must_exist:
        raise UserError(f"no study database at {shown_path(path)}; start the study with scaler search first")
    if path.is_dir():
        raise UserError(f"--storage path {shown_path(path)} is a folder, not a database file")
    check_writable(path.parent, "the storage folder")
    if missing or not schema:
        return
    if not os.access(path, os.R_OK | os.W_OK):
        raise UserError(f"cannot write the study database {shown_path(path)} (permission denied); fix its permissions")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
    except sqlite3.Error as error:
        raise UserError(
            f"{path} is not a readable SQLite database ({error}); move it away or choose another --study"
        ) from None
    if tables and not OPTUNA_TABLES <= tables:
        shown = ", ".join(sorted(tables)[:5])
        raise UserError(
            f"{path} is an SQLite database of another program (tables: {shown}); scaler will not write into it"
        )


def describe_error(error: BaseException, url: str) -> str:
    """First line of a storage error, with the URL's password hidden."""
    text = str(getattr(error, "orig", None) or error).strip().splitlines()
    first = text[0] if text else type(error).__name__
    match = re.search(r"://\S+", url)
    if match:
        first = first.replace(match.group(0), redact(match.group(0)))
    password = re.search(r"://[^:/@]*:(.*)@", url)
    if password and password.group(1):
        for part in {password.group(1), *password.group(1).split("@")} - {""}:
            first = first.replace(part, "***")
    return first[:300]


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLite waits for locks instead of failing; servers get a short connect timeout."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    if url.startswith("postgresql"):
        return {"connect_args": {"connect_timeout": 5}, "pool_pre_ping": True}
    return {}


def storage_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the storage itself failed."""
    from sqlalchemy.exc import SQLAlchemyError

    return (SQLAlchemyError, OSError, RuntimeError, ValueError)


def opening_errors() -> tuple[type[BaseException], ...]:
    """What opening a storage can raise that is the user's to fix: a missing driver, or `storage_errors`."""
    return (ImportError, *storage_errors())


def cannot_open(url: str, error: BaseException) -> UserError:
    """The one-line error of a storage that could not be opened: a missing driver, or the database's own reason."""
    if isinstance(error, ImportError):
        cause = error.__cause__ or error.__context__ or error
        driver = getattr(cause, "name", None) or "for this URL"
        install = "pip install 'scaler[postgres]'" if url.startswith("postgresql") else "install it for this Python"
        reason = f"its database driver ({driver}) is not installed: {install}"
    else:
        reason = describe_error(error, url)
    return UserError(f"cannot open storage {redact(url)}: {reason}")


def open_storage(url: str, heartbeat: int | None = None) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for a checked `url` (heartbeats re-queue dead workers' trials); errors in one line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs(url),
                heartbeat_interval=heartbeat,
                grace_period=3 * heartbeat if heartbeat else None,
                failed_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)
                if heartbeat
                else None,
            )
    except opening_errors() as error:
        raise cannot_open(url, error) from None


@contextlib.contextmanager
def study_lock(url: str, study: str) -> Iterator[None]:
    """Hold a lock per study across processes: a file lock beside an SQLite file, an advisory lock on PostgreSQL."""
    path = sqlite_path(url)
    if path is not None:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{path}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    if not url.startswith("postgresql"):
        yield
        return
    from sqlalchemy import create_engine, text

    key = zlib.crc32(f"scaler:{study}".encode())
    try:
        engine = create_engine(url, **engine_kwargs(url))
        connection = engine.connect()
        connection.execute(text("select pg_advisory_lock(:key)"), {"key": key})
    except opening_errors() as error:
        raise cannot_open(url, error) from None
    try:
        yield
    finally:
        with contextlib.suppress(*storage_errors()):
            connection.execute(text("select pg_advisory_unlock(:key)"), {"key": key})
            connection.close()
        engine.dispose()


class GridExhausted(Exception):
    """No job is waiting in the study's queue."""


class QueueStudy(optuna.Study):
    """A study whose trials come only from its queue: each enqueued job is claimed atomically once.

    Optuna's GridSampler hands a point out again when every point has started, so several workers
    repeat work; here `ask` pops a WAITING trial (a compare-and-set in the storage) or stops. With `only` set, it
    claims (and waits for) only the trials `only` accepts: a plan leaves another plan's queued jobs to that plan.
    """

    only: Callable[[optuna.trial.FrozenTrial], bool] | None = None

    def mine(self, trial: optuna.trial.FrozenTrial) -> bool:
        """Whether this process may claim (and should wait for) `trial`."""
        return self.only is None or self.only(trial)

    def ask(self, fixed_distributions: dict[str, Any] | None = None) -> optuna.Trial:
        """The next queued trial, claimed for this process; GridExhausted when none waits."""
        trial_id = self.claim_next()
        if trial_id is None:
            raise GridExhausted()
        try:
            return optuna.Trial(self, trial_id)
        except BaseException as error:  # stopped between the claim and the objective: fail it so it is queued again
            storage, _ = study_storage(self)
            storage.set_trial_user_attr(trial_id, INTERRUPTED, f"{type(error).__name__} while starting (queued again)")
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
            raise

    def claim_next(self) -> int | None:
        """Claim one WAITING trial with a conditional UPDATE, atomic on every backend.

        Optuna's claim reads the state and then writes it; SQLite ignores the read's FOR UPDATE,
        so two workers could both see WAITING and both run the trial.
        """
        storage, study_id = study_storage(self)
        engine = rdb_engine(storage)
        for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
            if self.mine(trial) and claim_waiting_trial(engine, trial_id_of(trial)):
                return trial_id_of(trial)
        return None


def claim_waiting_trial(engine: Any, trial_id: int) -> bool:
    """Set a trial RUNNING only if it is still WAITING; whether this caller got it."""
    from sqlalchemy import update

    TrialModel = rdb_trial_model()
    claim = (
        update(TrialModel)
        .where(TrialModel.trial_id == trial_id, TrialModel.state == TrialState.WAITING)
        .values(state=TrialState.RUNNING, datetime_start=datetime.now())
    )
    with engine.begin() as connection:
        return bool(connection.execute(claim).rowcount == 1)


def queued_key(trial: optuna.trial.FrozenTrial, key: str) -> Any:
    """The job a trial holds: its parameter once started, its fixed parameter while queued, else its user attribute."""
    return trial.params.get(key, trial.system_attrs.get("fixed_params", {}).get(key, trial.user_attrs.get(key)))


def holds_its_point(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial accounts for its job: all but a FAIL that was interrupted or crashed, not failed on its merits."""
    return trial.state != TrialState.FAIL or FAILURE in trial.user_attrs


def enqueue_missing(study: optuna.Study, url: str, key: str, values: list[Any], as_param: bool = True) -> int:
    """Queue each value of `key` no trial holds yet (interrupted ones are queued again), under the study's lock; how
    many. The value is the trial's fixed parameter `key`, or with `as_param` False its user attribute `key`."""
    with study_lock(url, study.study_name):
        held = {queued_key(t, key) for t in study.get_trials(deepcopy=False) if holds_its_point(t)}
        missing = [value for value in values if value not in held]
        for value in missing:
            if as_param:
                study.enqueue_trial({key: value}, skip_if_exists=False)
            else:
                study.enqueue_trial({}, user_attrs={key: value}, skip_if_exists=False)
    return len(missing)


def open_study(
    url: str,
    name: str,
    *,
    create: bool,
    heartbeat: int | None = None,
    directions: tuple[str, ...] = ("maximize",),
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    queue: bool = True,
) -> optuna.Study:
    """The study `name` in `url`, created under the study's lock when `create` (two processes may start together)."""
    check_url(url, must_exist=not create, schema=False)
    with study_lock(url, name):
        path = sqlite_path(url)
        if path is not None:  # whose tables these are, read once no other process is half-way through creating them
            check_sqlite_file(path, must_exist=not create)
        storage = open_storage(url, heartbeat)
        try:
            if create:
                optuna.create_study(
                    storage=storage,
                    study_name=name,
                    directions=[optuna.study.StudyDirection[d.upper()] for d in directions],
                    load_if_exists=True,
                )
            elif name not in optuna.get_all_study_names(storage):
                raise UserError(
                    f"no study {name!r} in {redact(url)}; start it with scaler search --study {name} --storage URL"
                )
            study_class = QueueStudy if queue else optuna.Study
            return study_class(name, storage, sampler=sampler, pruner=pruner)
        except storage_errors() as error:
            raise UserError(f"storage {redact(url)} failed: {describe_error(error, url)}") from None


@contextlib.contextmanager
def removed_if_left_empty(url: str) -> Iterator[None]:
    """Remove an SQLite store this block created (and the folders made for it) if the block fails before any run
    finished in it: a refused or failed command leaves nothing behind, a cut one keeps what it finished."""
    path = sqlite_path(url)
    if path is None or path.exists():
        yield
        return
    made = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    try:
        yield
    except BaseException:
        if not has_finished_trials(url):
            for leftover in (path, Path(f"{path}.lock"), Path(f"{path}-journal")):
                with contextlib.suppress(OSError):
                    leftover.unlink()
            for folder in made:
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise


def has_finished_trials(url: str) -> bool:
    """Whether an SQLite store holds any finished trial, read through Optuna (False when it cannot be read)."""
    path = sqlite_path(url)
    if path is None or not path.exists():
        return False
    try:
        storage = optuna.storages.RDBStorage(url, skip_table_creation=True, skip_compatibility_check=True)
        try:
            return any(
                optuna.load_study(study_name=name, storage=storage).get_trials(
                    deepcopy=False, states=(TrialState.COMPLETE,)
                )
                for name in optuna.get_all_study_names(storage)
            )
        finally:
            storage.engine.dispose()
    except storage_errors():
        return False
