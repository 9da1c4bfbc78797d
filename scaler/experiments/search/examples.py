"""Every search training's per-example outputs as one array file (`search_examples.npz`), as the engine keeps them
for every other experiment."""

from __future__ import annotations

import numpy as np
from optuna.trial import TrialState

from scaler.experiments.search.plan import job_name, job_of
from scaler.experiments.search.queue import GridSearch
from scaler.study.engine import OUTPUTS
from scaler.study.examples import split_arrays
from scaler.training.train import Outputs


def search_examples(search: GridSearch) -> dict[str, np.ndarray]:
    """Per-example outputs of every finished training (`stage:network:seed`, with stage, network and seed arrays):
    `<split>_predicted`, `<split>_p_true` and `<split>_labels` per split, as every engine experiment keeps them, so
    the screen's and the race's tables can be recomputed from the files."""
    dataset = search.setup.dataset
    finished = search.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    done = [(job_of(t), t.user_attrs[OUTPUTS]) for t in finished if t.user_attrs.get(OUTPUTS)]
    done = [(point, outputs) for point, outputs in done if "stage" in point]
    if dataset is None or not done:
        return {}
    done.sort(key=lambda run: (str(run[0]["stage"]), str(run[0]["network"]), int(run[0]["seed"])))
    points = [point for point, _ in done]
    arrays: dict[str, np.ndarray] = {
        "label": np.array([job_name(point) for point in points]),
        "stage": np.array([str(p["stage"]) for p in points]),
        "network": np.array([str(p["network"]) for p in points]),
        "seed": np.array([int(p["seed"]) for p in points]),
    }
    for name, split in (("val", dataset.val), ("test", dataset.test)):
        stored = [outputs.get(name) for _, outputs in done]
        arrays |= split_arrays(name, split, [Outputs.from_json(data) if data else None for data in stored])
    return arrays
