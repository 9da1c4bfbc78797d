"""Comparisons on per-example outputs: pairing by seed and image, the fallback to seeds, families."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scaler.study.examples import Examples, group_statistics


def arrays(rng: np.random.Generator, accuracy: dict[str, float], seeds: int, images: int) -> dict[str, np.ndarray]:
    """Outputs of one run per (network, seed) on `images` test images, each right with the network's accuracy."""
    labels = rng.integers(0, 10, size=images)
    runs = [(network, seed) for network in accuracy for seed in range(seeds)]
    predicted = np.array(
        [np.where(rng.random(images) < accuracy[network], labels, (labels + 1) % 10) for network, _ in runs]
    ).astype(np.int16)
    return {
        "label": np.array([f"{network} seed {seed}" for network, seed in runs]),
        "seed": np.array([seed for _, seed in runs]),
        "test_predicted": predicted,
        "test_p_true": np.full(predicted.shape, 0.5, dtype=np.float16),
        "test_labels": labels,
        "test_images": np.array("abc"),
    }


def frame_of(examples: dict[str, np.ndarray]) -> pd.DataFrame:
    """The runs' table: network, seed, label and the per-seed accuracy the outputs give."""
    correct = examples["test_predicted"] == examples["test_labels"][None, :]
    return pd.DataFrame(
        {
            "network": [str(label).split(" seed")[0] for label in examples["label"]],
            "seed": examples["seed"].astype(float),
            "label": examples["label"],
            "test_acc": correct.mean(axis=1),
        }
    )


def test_group_statistics_pairs_runs_by_seed_and_adjusts_the_family(tmp_path) -> None:
    rng = np.random.default_rng(0)
    data = arrays(rng, {"base": 0.80, "same": 0.80, "better": 0.86}, seeds=3, images=4000)
    np.savez_compressed(tmp_path / "x_examples.npz", **data)
    examples = Examples.load(tmp_path / "x_examples.npz")
    frame = frame_of(data)
    rows = group_statistics(frame, ["network"], examples, references={"vs_base": lambda network: "base"})
    accuracy = frame.groupby("network").test_acc.mean()
    assert rows[("better",)]["test_acc"] == pytest.approx(accuracy["better"])
    assert rows[("better",)]["vs_base"] == pytest.approx(accuracy["better"] - accuracy["base"])
    assert rows[("better",)]["vs_base_significant"] and not rows[("same",)]["vs_base_significant"]
    assert "vs_base" not in rows[("base",)]
    assert rows[("better",)]["vs_base_p_holm"] >= rows[("better",)]["vs_base_p"]
    assert rows[("base",)]["floor"] == pytest.approx(np.sqrt(0.8 * 0.2 / 4000), rel=0.05)
    assert rows[("base",)]["acc_lo"] < accuracy["base"] < rows[("base",)]["acc_hi"]


def test_group_statistics_falls_back_to_seeds_without_outputs() -> None:
    rng = np.random.default_rng(1)
    frame = frame_of(arrays(rng, {"base": 0.8, "wide": 0.85}, seeds=3, images=500))
    rows = group_statistics(frame, ["network"], None, references={"vs_base": lambda network: "base"})
    differences = (
        frame[frame.network == "wide"].test_acc.to_numpy() - frame[frame.network == "base"].test_acc.to_numpy()
    )
    assert rows[("wide",)]["vs_base"] == pytest.approx(differences.mean())
    assert np.isnan(rows[("wide",)]["floor"])
    assert rows[("wide",)]["seed_sd"] == pytest.approx(frame[frame.network == "wide"].test_acc.std())


def test_group_statistics_pairs_only_the_seeds_both_ran() -> None:
    rng = np.random.default_rng(2)
    data = arrays(rng, {"base": 0.8, "wide": 0.85}, seeds=3, images=500)
    frame = frame_of(data)
    frame = frame[~((frame.network == "base") & (frame.seed == 2))]
    rows = group_statistics(frame, ["network"], Examples(data), references={"vs_base": lambda network: "base"})
    kept = frame.set_index(["network", "seed"]).test_acc
    assert rows[("wide",)]["vs_base"] == pytest.approx(np.mean([kept["wide", s] - kept["base", s] for s in (0.0, 1.0)]))
    assert rows[("base",)]["seeds"] == 2 and rows[("wide",)]["seeds"] == 3


def test_examples_refuse_two_runs_with_one_label() -> None:
    with pytest.raises(ValueError, match="distinct label"):
        Examples({"label": np.array(["a", "a"])})
