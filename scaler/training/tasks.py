"""Input shape and class count of each dataset, and of explicit --input/--classes tasks."""

from __future__ import annotations

from dataclasses import dataclass

from scaler.errors import UserError


@dataclass(frozen=True)
class Task:
    """What the network sees and predicts: channels, square resolution, classes."""

    in_channels: int
    resolution: int
    num_classes: int


DATASET_TASKS: dict[str, Task] = {
    "fashion-mnist": Task(1, 28, 10),
    "mnist": Task(1, 28, 10),
    "cifar10": Task(3, 32, 10),
}


def dataset_task(name: str, input: Task | None = None) -> Task:
    """The task of a known dataset, or of a folder of images from its headers (`input` overrides a folder's shape)."""
    if name in DATASET_TASKS:
        return DATASET_TASKS[name]
    from scaler.training.folder import folder_task, is_folder_dataset

    if is_folder_dataset(name):
        return folder_task(name, input)
    raise unknown_dataset(name)


def unknown_dataset(name: str) -> UserError:
    """The error for a --dataset that is neither a known name nor a folder."""
    return UserError(
        f"unknown dataset {name!r}; choose from {', '.join(DATASET_TASKS)}, "
        "or give a folder of class sub-folders as a path (e.g. ./photos)"
    )


def parse_input(text: str, num_classes: int) -> Task:
    """Task from 'CxHxW' (square) and a class count."""
    try:
        channels, height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--input {text!r} must look like 3x224x224") from None
    if height != width or min(channels, height) < 1:
        raise UserError(f"--input {text!r}: only square inputs with positive sizes are supported")
    if num_classes < 2:
        raise UserError(f"--classes must be at least 2 (got {num_classes})")
    return Task(channels, height, num_classes)
