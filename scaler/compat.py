"""Every private Optuna and torch API scaler uses, each behind one small function: when an upgrade moves one, the
function raises a RuntimeError naming it, and tests/test_compat.py fails on that line (pyproject's bounds say which
versions were checked)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    import optuna


def changed(package: str, api: str, error: BaseException) -> RuntimeError:
    """The error for a private API an installed version no longer has."""
    version = getattr(__import__(package), "__version__", "?")
    return RuntimeError(
        f"{package} {version} no longer has {api} ({type(error).__name__}: {error}); scaler.compat needs updating "
        f"for it, or install the {package} version pyproject.toml bounds"
    )


def rdb_trial_model() -> Any:
    """Optuna's SQLAlchemy table of trials (optuna.storages._rdb.models.TrialModel), for claiming a queued trial
    with one conditional UPDATE."""
    try:
        from optuna.storages._rdb.models import TrialModel
    except ImportError as error:
        raise changed("optuna", "optuna.storages._rdb.models.TrialModel", error) from None
    for column in ("trial_id", "state", "datetime_start"):
        if not hasattr(TrialModel, column):
            raise changed("optuna", f"TrialModel.{column}", AttributeError(column))
    return TrialModel


def study_storage(study: optuna.Study) -> tuple[Any, int]:
    """A study's storage and its id in it (Study._storage, Study._study_id)."""
    try:
        return study._storage, study._study_id
    except AttributeError as error:
        raise changed("optuna", "Study._storage / Study._study_id", error) from None


def rdb_engine(storage: Any) -> Any:
    """The SQLAlchemy engine of an RDB storage, inside Optuna's cache when it wraps one (_CachedStorage._backend)."""
    backend = getattr(storage, "_backend", storage)
    try:
        return backend.engine
    except AttributeError as error:
        raise changed("optuna", "RDBStorage.engine behind _CachedStorage._backend", error) from None


def trial_id_of(trial: optuna.trial.FrozenTrial) -> int:
    """A frozen trial's id in its storage (FrozenTrial._trial_id)."""
    try:
        return int(trial._trial_id)
    except AttributeError as error:
        raise changed("optuna", "FrozenTrial._trial_id", error) from None


@contextlib.contextmanager
def recompile_limit_fails() -> Iterator[None]:
    """Within the block, a compiled function that hits dynamo's recompile limit raises instead of running eager
    (torch._dynamo.config.fail_on_recompile_limit_hit), so a latency is never silently of the eager model."""
    try:
        import torch._dynamo

        patch = torch._dynamo.config.patch(fail_on_recompile_limit_hit=True)
    except (ImportError, AttributeError, KeyError) as error:
        raise changed("torch", "torch._dynamo.config.fail_on_recompile_limit_hit", error) from None
    with patch:
        yield


def foreach_lerp_(targets: list[torch.Tensor], sources: list[torch.Tensor], weight: float) -> None:
    """targets += weight * (sources - targets), in place, one fused call (torch._foreach_lerp_)."""
    try:
        lerp = torch._foreach_lerp_
    except AttributeError as error:
        raise changed("torch", "torch._foreach_lerp_", error) from None
    lerp(targets, sources, weight)
