"""The private Optuna and torch APIs scaler uses, each through scaler.compat: these fail, naming the API, when an
installed version moves one."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from scaler import compat


def test_optunas_trial_table_and_storage_internals_are_where_the_claim_reads_them(tmp_path: Path) -> None:
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'c.db'}")
    study = optuna.create_study(storage=storage, study_name="c")
    study.enqueue_trial({"x": 1})
    held, study_id = compat.study_storage(study)
    assert study_id == held.get_study_id_from_name("c")
    waiting = held.get_all_trials(study_id, states=(TrialState.WAITING,))
    identifier = compat.trial_id_of(waiting[0])
    assert held.get_trial(identifier).state == TrialState.WAITING
    from sqlalchemy import update

    model = compat.rdb_trial_model()
    with compat.rdb_engine(held).begin() as connection:
        changed = connection.execute(
            update(model).where(model.trial_id == identifier).values(state=TrialState.RUNNING)
        ).rowcount
    assert changed == 1 and held.get_trial(identifier).state == TrialState.RUNNING


def test_a_moved_private_api_is_named_in_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna.storages._rdb.models", None)
    with pytest.raises(RuntimeError, match=r"optuna \S+ no longer has optuna.storages._rdb.models.TrialModel"):
        compat.rdb_trial_model()
    monkeypatch.delattr(torch, "_foreach_lerp_")
    with pytest.raises(RuntimeError, match="torch .* no longer has torch._foreach_lerp_"):
        compat.foreach_lerp_([torch.zeros(1)], [torch.ones(1)], 0.5)


def test_torchs_fused_lerp_and_dynamos_recompile_switch_work() -> None:
    targets = [torch.zeros(3), torch.full((2,), 4.0)]
    compat.foreach_lerp_(targets, [torch.ones(3), torch.zeros(2)], 0.25)
    assert torch.allclose(targets[0], torch.full((3,), 0.25)) and torch.allclose(targets[1], torch.full((2,), 3.0))
    from torch._dynamo import config

    with compat.recompile_limit_fails():
        assert config.fail_on_recompile_limit_hit is True
    assert config.fail_on_recompile_limit_hit is False
