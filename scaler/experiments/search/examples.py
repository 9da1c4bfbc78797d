"""Every search training's per-example outputs as one array file (`search_examples.npz`), as the engine keeps them
for every other experiment."""

from __future__ import annotations

import numpy as np
from optuna.trial import TrialState

from scaler.experiments.search.queue import GridSearch
from scaler.study.engine import OUTPUTS
from scaler.study.examples import split_arrays
from scaler.training.train import Outputs


def search_examples(search: GridSearch) -> dict[str, np.ndarray]:
    """Per-example outputs of every finished training (`stage:network:seed`, with stage, network and seed arrays):
    `<split>_predicted`, `<split>_p_true` and `<split>_labels` per split, as every engine experiment keeps them, so
    the screen's and the race's tables can be recomputed from the files."""
    dataset = search.setup.dataset
    trials = [
        t
        for t in search.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get(OUTPUTS) and "stage" in t.user_attrs
    ]
    if dataset is None or not trials:
        return {}
    trials.sort(key=lambda t: (str(t.user_attrs["stage"]), str(t.user_attrs["network"]), int(t.user_attrs["seed"])))
    arrays: dict[str, np.ndarray] = {
        "label": np.array(
            [f"{t.user_attrs['stage']}:{t.user_attrs['network']}:{t.user_attrs['seed']}" for t in trials]
        ),
        "stage": np.array([str(t.user_attrs["stage"]) for t in trials]),
        "network": np.array([str(t.user_attrs["network"]) for t in trials]),
        "seed": np.array([int(t.user_attrs["seed"]) for t in trials]),
    }
    for name, split in (("val", dataset.val), ("test", dataset.test)):
        stored = [t.user_attrs[OUTPUTS].get(name) for t in trials]
        arrays |= split_arrays(name, split, [Outputs.from_json(data) if data else None for data in stored])
    return arrays
