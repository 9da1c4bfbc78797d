"""The training loop's parts: per-image RandAugment, BN statistics at the eval size, progressive stages, the LR schedule."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from scaler.errors import UserError
from scaler.model.nn.build import build
from scaler.model.scaling import scale
from scaler.model.variants import apply_variant
from scaler.model.zoo import base
from scaler.training.augment import OPS, apply_op, op_strength, rand_augment
from scaler.training.data import Dataset, Split
from scaler.training.train import (
    Prepared,
    Progressive,
    TrainConfig,
    WeightAverage,
    cosine_lr,
    prepared_outputs,
    recalibrate_batchnorm,
    train,
)


def striped(channels: int = 1, size: int = 28) -> torch.Tensor:
    """One uint8 image with structure in both directions (so every op changes it)."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    image = ((x * 9 + y * 4) % 200 + 30).to(torch.uint8)
    image[5:12, 3:20] = 250
    return image.expand(channels, size, size).clone()


def test_every_image_draws_its_own_ops() -> None:
    copies = striped().expand(64, 1, 28, 28).clone()
    out = rand_augment(copies, 9, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == copies.shape
    distinct = {bytes(image.numpy()) for image in out}
    assert len(distinct) > 20, f"only {len(distinct)} distinct images out of 64 copies"


def test_augmentation_is_reproducible_from_the_seed_and_leaves_the_global_rng() -> None:
    copies = striped(3, 32).expand(16, 3, 32, 32).clone()
    state = torch.get_rng_state()
    first = rand_augment(copies, 12, torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state), "the global RNG was drawn from"
    assert torch.equal(first, rand_augment(copies, 12, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, rand_augment(copies, 12, torch.Generator().manual_seed(8)))
    assert torch.equal(rand_augment(copies, 0, torch.Generator().manual_seed(7)), copies)


REFERENCE = {
    "brightness": lambda img, m: TF.adjust_brightness(img, 1 + m),
    "color": lambda img, m: TF.adjust_saturation(img, 1 + m),
    "contrast": lambda img, m: TF.adjust_contrast(img, 1 + m),
    "sharpness": lambda img, m: TF.adjust_sharpness(img, 1 + m),
    "posterize": lambda img, m: TF.posterize(img, int(m)),
    "solarize": lambda img, m: TF.solarize(img, m),
    "autocontrast": lambda img, m: TF.autocontrast(img),
    "equalize": lambda img, m: TF.equalize(img),
    "translate_x": lambda img, m: TF.affine(img, angle=0.0, translate=[int(m), 0], scale=1.0, shear=[0.0, 0.0]),
    "translate_y": lambda img, m: TF.affine(img, angle=0.0, translate=[0, int(m)], scale=1.0, shear=[0.0, 0.0]),
}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("op", sorted(REFERENCE))
def test_ops_match_torchvision(op: str, channels: int) -> None:
    """Each op on one image equals torchvision's functional op at the same strength (within rounding)."""
    image = striped(channels)
    if channels == 3:
        image[1] = image[1].flip(-1)
        image[2] = 255 - image[2]
    strength = op_strength(op, 15, 28)
    if op.startswith("translate"):
        strength = float(round(strength))
    ours = apply_op(image[None].float(), op, torch.tensor([strength]))[0].round().clamp(0, 255).to(torch.uint8)
    theirs = REFERENCE[op](image, strength)
    assert (ours.int() - theirs.int()).abs().max() <= 1, f"{op}: differs from torchvision"


def test_geometric_ops_move_the_image_by_their_strength() -> None:
    image = striped()[None].float()
    for op in ("shear_x", "shear_y", "rotate"):
        moved = apply_op(image, op, torch.tensor([op_strength(op, 15, 28)]))
        assert not torch.equal(moved, image) and moved.shape == image.shape
        assert torch.equal(apply_op(image, op, torch.tensor([0.0])), image), f"{op} at strength 0 is the identity"
    assert len(OPS) == 14


def test_progressive_stage_boundaries() -> None:
    progressive = Progressive()
    assert [progressive.stages_for(e) for e in (3, 4, 5, 6, 9)] == [1, 2, 2, 3, 3]
    assert [progressive.stage_of(e, 6) for e in range(6)] == [0, 0, 1, 1, 2, 2]
    assert [progressive.stage_of(e, 5) for e in range(5)] == [0, 0, 0, 1, 1]
    first, last = progressive.settings(0, 6, 28), progressive.settings(2, 6, 28)
    assert (first[0], last[0]) == (16, 28) and first[1:3] == (0.1, 5.0) and last[1:3] == pytest.approx((0.3, 15.0))
    with pytest.raises(UserError, match="at least 4 epochs"):
        progressive.check(3)


def test_cosine_lr() -> None:
    factors = [cosine_lr(step, 100, 10) for step in range(101)]
    assert factors[0] == pytest.approx(1 / 11) and factors[9] == pytest.approx(10 / 11)
    assert (
        factors[10] == pytest.approx(1.0) and factors[55] == pytest.approx(0.5) and factors[100] == pytest.approx(0.0)
    )
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))


def tiny_dataset(n: int = 256, size: int = 28) -> Dataset:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, size, size), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=generator)
    split = Split(images, labels)
    return Dataset("synthetic", split, split.subset(64, 0), split.subset(64, 1), 10, "test")


def test_batchnorm_statistics_are_recomputed_at_the_eval_size() -> None:
    """After progressive training whose last stage is small, BN statistics are those of full-size images."""
    dataset = tiny_dataset()
    spec = scale(base("mobilenet", 1, 28, 10), 1.0, 0.25, 1.0)
    model = build(spec, seed=0)
    config = TrainConfig(epochs=4, batch_size=64, progressive=Progressive(stages=2, start_fraction=0.5), precise_bn=128)
    result = train(model, dataset, 28, config, progress=False)
    assert result.resolutions == [14, 14, 28, 28]
    trained = {name: b.clone() for name, b in model.named_buffers() if "running_mean" in name}
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in dataset.mean_std)
    head = Split(dataset.train.images[:128], dataset.train.labels[:128])
    for size, same in ((28, True), (14, False)):
        recalibrate_batchnorm(model, Prepared(head, mean, std, size, torch.device("cpu"), True), 128)
        now = {name: b for name, b in model.named_buffers() if "running_mean" in name}
        assert all(torch.allclose(trained[k], now[k], atol=1e-5) for k in trained) == same, size


def test_an_image_budget_cuts_the_last_epoch_short() -> None:
    """max_images=96 at batch 32 over 64 images: 3 steps, two validations (after epoch 1 and the cut epoch 2)."""
    images = torch.randint(0, 255, (64, 1, 16, 16), dtype=torch.uint8)
    split = Split(images, torch.randint(0, 10, (64,)))
    dataset = Dataset("tiny", split, Split(images[:16], split.labels[:16]), split, 10, "memory")
    spec = scale(base("mobilenet", 1, 16, 10), 1.0, 0.25, 1.0)
    config = TrainConfig(epochs=5, batch_size=32, max_images=96, precise_bn=0, warmup_steps=0)
    result = train(build(spec), dataset, spec.resolution, config, progress=False)
    assert result.images_seen == 96 and result.epochs == 2 and len(result.val_acc) == 2
    full = train(
        build(spec), dataset, spec.resolution, TrainConfig(epochs=2, batch_size=32, precise_bn=0), progress=False
    )
    assert full.images_seen == 128 and full.epochs == 2


def test_weight_average_is_what_is_validated_and_returned() -> None:
    """With ema the model ends holding the average (an average of its weights, not the last ones), its outputs are
    the validation's, and the last weights' own outputs are kept beside them."""
    dataset = tiny_dataset()
    spec = scale(base("mobilenet", 1, 28, 10), 1.0, 0.25, 1.0)
    plain = build(spec, seed=0)
    averaged = build(spec, seed=0)
    config = TrainConfig(epochs=2, batch_size=32, precise_bn=64, warmup_steps=0)
    train(plain, dataset, 28, config, progress=False)
    result = train(averaged, dataset, 28, replace(config, ema=0.5), progress=False)
    assert result.raw_val_outputs is not None and result.val_outputs is not None
    last = dict(plain.named_parameters())
    assert any(not torch.allclose(p, last[name]) for name, p in averaged.named_parameters())
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in dataset.mean_std)
    val = Prepared(dataset.val, mean, std, 28, torch.device("cpu"), True)
    predicted, _ = prepared_outputs(averaged, val)
    assert (predicted == result.val_outputs.predicted).all()
    raw, _ = prepared_outputs(plain, val)
    assert (raw == result.raw_val_outputs.predicted).mean() > 0.9  # the same run's last weights, BN recomputed alike


def test_weight_average_warms_up_then_follows_the_horizon() -> None:
    layer = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(layer.weight)
    average = WeightAverage(layer, horizon_steps=4)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    average.update()
    assert average.average[0].item() == pytest.approx(0.9)  # warm-up: decay (1 + 0) / (10 + 0)
    for _ in range(200):
        average.update()
    assert average.average[0].item() == pytest.approx(1.0, abs=1e-6) and average.decay == pytest.approx(0.75)
    average.swap()
    assert layer.weight.item() == pytest.approx(1.0, abs=1e-6)


def test_weight_average_refuses_flgc_networks() -> None:
    dataset = tiny_dataset()
    spec = scale(base("resnet50", 1, 28, 10), 1.0, 0.125, 1.0)
    model = build(apply_variant(spec, "flgc:2"), seed=0)
    with pytest.raises(UserError, match="--ema"):
        train(model, dataset, 28, TrainConfig(epochs=1, batch_size=64, ema=0.2), progress=False)


def test_duplication_in_training_keeps_validation_accuracy_and_records_how_groups_moved() -> None:
    """The loop validates just before and just after the freeze adds duplicates (the same accuracy: new
    connections start at zero) and records each FLGC layer's moved channels up to the freeze."""
    from scaler.model.nn.flgc import flgc_layers

    dataset = tiny_dataset()
    spec = scale(base("resnet50", 1, 28, 10), 1.0, 0.125, 1.0)
    model = build(apply_variant(spec, "flgc-dup:2+spatial"), seed=0)
    for layer in flgc_layers(model):
        layer.score = "weight"  # fires on a barely trained network, where logits hardly differ
    config = TrainConfig(epochs=2, batch_size=16, assignment_lr_scale=20.0, precise_bn=64, amp=False)
    result = train(model, dataset, 28, config, progress=False)
    layers = flgc_layers(model)
    assert sum(layer.duplicated_channels() for layer in layers) > 0
    assert result.val_before_dup == result.val_after_dup and 0 <= result.val_before_dup <= 1
    steps = [step for step, _ in layers[0].moved_history]
    assert steps == sorted(steps) and steps[0] == 0 and len(steps) > 2
    assert all(layer.moved_history[-1][1] == layer.moved() for layer in layers)
    assert any(moved > 0 for layer in layers for _, moved in layer.moved_history)
