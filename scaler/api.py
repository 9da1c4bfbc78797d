"""scaler from Python: the scaled network for your own training code, and a search's answer in one call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from scaler.model.scaling import scale_compound
from scaler.model.spec import NetSpec
from scaler.report.files import StudyInfo, study_info
from scaler.study.run import RunConfig, built
from scaler.study.storage import STUDIES_DIR
from scaler.training.tasks import Task, dataset_task, parse_input


def task_for(input: str | tuple[int, int, int] = "fashion-mnist", classes: int | None = None) -> Task:
    """What the network sees: a dataset name or folder, 'CxHxW', or (C, H, W); `classes` overrides the count."""
    if isinstance(input, tuple):
        channels, height, width = input
        return parse_input(f"{channels}x{height}x{width}", classes or 1000)
    if "x" in input.lower() and input.lower().replace("x", "").isdigit():
        return parse_input(input, classes or 1000)
    task = dataset_task(input)
    return task if classes is None else Task(task.in_channels, task.resolution, classes)


def scaled_spec(
    base: str = "mobilenet",
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 1.0,
    phi: float = 0.0,
    *,
    variant: str = "relu",
    width: float = 1.0,
    input: str | tuple[int, int, int] = "fashion-mnist",
    classes: int | None = None,
) -> NetSpec:
    """The NetSpec of `base` (a zoo name or a network file) at `width`, with `variant`, scaled by alpha^phi,
    beta^phi, gamma^phi, for the task `input` names."""
    task = task_for(input, classes)
    dataset = input if isinstance(input, str) and not input.lower().replace("x", "").isdigit() else "fashion-mnist"
    config = RunConfig(command="build", base=base, width=width, variant=variant, dataset=dataset, task=task)
    return scale_compound(config.base_spec(), alpha, beta, gamma, phi)


def build(
    base: str = "mobilenet",
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 1.0,
    phi: float = 0.0,
    *,
    variant: str = "relu",
    width: float = 1.0,
    input: str | tuple[int, int, int] = "fashion-mnist",
    classes: int | None = None,
    seed: int | None = None,
) -> nn.Module:
    """The scaled network as an nn.Module in its training form (BN, FReLU funnels and FLGC assignments learnable);
    its input is `scaled_spec(...).input_shape`, normalised with the training split's mean and std."""
    spec = scaled_spec(base, alpha, beta, gamma, phi, variant=variant, width=width, input=input, classes=classes)
    return built(spec, seed=seed)


@dataclass(frozen=True)
class Answer(StudyInfo):
    """What a finished `scaler search` exported (study_info's reading of it), able to build its network."""

    def spec(self, phi: float = 1.0, variant: str = "relu") -> NetSpec:
        """The searched network's spec at `phi`, for the study's dataset."""
        return scaled_spec(
            self.base, self.alpha, self.beta, self.gamma, phi, variant=variant, width=self.width, input=self.dataset
        )

    def build(self, phi: float = 1.0, variant: str = "relu", seed: int | None = None) -> nn.Module:
        """The searched network scaled to `phi`, for the study's dataset, in its training form."""
        return built(self.spec(phi, variant), seed=seed)


def load_study(name: str, studies_dir: str | Path = STUDIES_DIR) -> Answer:
    """The answer of the search in studies/<name> (its summary.json)."""
    return Answer(**vars(study_info(name, Path(studies_dir))))
