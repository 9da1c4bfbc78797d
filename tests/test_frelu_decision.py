"""FReLU placement as a decision: per-stage effects over paired seeds, the front's gains over ReLU, a verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from torch import nn

from scaler.experiments.frelu import all_masks, mask_variant, recommend, stage_effects, summarise
from scaler.model.complexity import interleaved_latency


def synthetic_masks(gain: float, seeds: int = 4) -> pd.DataFrame:
    """Three stages: FReLU in stage 2 adds `gain` on every seed; each stage's FReLU adds latency; seed noise."""
    rng = np.random.default_rng(0)
    seed_shift = rng.normal(0, 0.01, seeds)
    rows = []
    for mask in all_masks(3):
        bits = [int(bit) for bit in mask]
        accuracies = 0.80 + gain * bits[1] + seed_shift + rng.normal(0, 0.002, seeds)
        rows.append(
            {
                "mask": mask,
                "variant": mask_variant(mask),
                "val_accs": list(accuracies),
                "latency_ms": 10.0 + 1.0 * bits[0] + 0.5 * bits[1] + 2.0 * bits[2],
                "latency_iqr_ms": 0.1,
                "latency_form": "deployed",
                "macs": 1e6,
                "params": 1e4,
                "train_seconds": 1.0,
            }
        )
    return summarise(pd.DataFrame(rows))


def test_stage_effects_find_the_stage_that_helps() -> None:
    effects = stage_effects(synthetic_masks(0.02)).set_index("stage")
    assert effects.loc[2, "d_val_acc"] == pytest.approx(0.02, abs=0.003)
    assert effects.loc[2, "significant"] and not effects.loc[1, "significant"] and not effects.loc[3, "significant"]
    assert effects.loc[3, "d_latency_ms"] == pytest.approx(2.0) and effects.loc[1, "latency_ratio"] > 1


def test_recommendation_names_the_cheapest_significant_mask() -> None:
    frame = synthetic_masks(0.02)
    assert frame.latency_ms.is_monotonic_increasing and (frame.seeds == 4).all()
    front, verdict = recommend(frame)
    assert front["mask"].tolist()[:2] == ["000", "010"]
    chosen = front.set_index("mask").loc["010"]
    assert chosen.significant and chosen.vs_relu == pytest.approx(0.02, abs=0.006) and chosen.latency_vs_relu == 1.05
    assert verdict.startswith("FReLU in stage(s) 2 (mask 010)")
    assert "family-wise interval excludes zero (averaged over the other stages): stage 2 +1.9" in verdict


def test_recommendation_keeps_relu_when_nothing_is_significant() -> None:
    front, verdict = recommend(synthetic_masks(0.0))
    assert verdict.startswith("keep ReLU") and front.in_best_set_within.any()
    assert verdict.endswith("no stage's main effect on accuracy excludes zero (family-wise)")


def test_interleaved_latency_times_every_model_every_round() -> None:
    models = {"a": nn.Conv2d(1, 4, 3), "b": nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())}
    times = interleaved_latency(models, (1, 8, 8), rounds=5, warmup=1)
    assert set(times) == {"a", "b"} and all(len(t) == 5 and min(t) > 0 for t in times.values())


def test_interleaved_latency_feeds_each_model_its_own_input_shape() -> None:
    models = {"small": nn.Conv2d(1, 4, 3), "large": nn.Conv2d(3, 4, 3)}
    times = interleaved_latency(models, {"small": (1, 8, 8), "large": (3, 16, 16)}, rounds=3, warmup=1)
    assert all(len(t) == 3 for t in times.values())
