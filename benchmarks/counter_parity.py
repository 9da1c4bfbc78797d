"""MACs by both counters, fvcore's trace and torch's FlopCounterMode, on every base against torchvision's model where
one exists, and on the main variants at Fashion-MNIST size: the parity table of the README.

    python benchmarks/counter_parity.py > benchmarks/results/counter_parity.txt

Last line: `max_rel_diff=<f> cases=<n>` (the largest |torch - fvcore| / fvcore over every row).
"""

from __future__ import annotations

import torch
import torchvision

from scaler.model.complexity import count_macs, count_params
from scaler.model.nn.build import build
from scaler.model.scaling import scale
from scaler.model.variants import apply_variant
from scaler.model.zoo import BASES, EFFICIENTNET_FAMILY, base, efficientnet

TORCHVISION = {
    "mobilenetv2": torchvision.models.mobilenet_v2,
    "efficientnetv2-s": torchvision.models.efficientnet_v2_s,
    "resnet50": torchvision.models.resnet50,
    "efficientnet-b0": torchvision.models.efficientnet_b0,
}
VARIANTS = {
    "mobilenet": ("relu", "frelu", "fused", "flgc:4", "fixed:4"),
    "resnet50": ("relu", "frelu", "flgc:4", "fixed:4", "flgc:4+spatial"),
}


def main() -> None:
    torch.manual_seed(0)
    print("# MACs (M) of conv + linear for one image, eval mode; torch = FlopCounterMode FLOPs / 2")
    print(f"{'network':<37}{'params(M)':>10}{'fvcore':>11}{'torch':>11}{'diff %':>8}{'tv fvcore':>11}{'tv torch':>11}")
    worst, cases = 0.0, 0
    specs = [(f"{name} 224 px", base(name)) for name in sorted(BASES)]
    specs += [(f"efficientnet-{v} {EFFICIENTNET_FAMILY[v][2]} px", efficientnet(v)) for v in ("b3", "b7")]
    specs += [
        (f"{name} x0.25 28 px {variant}", apply_variant(scale(base(name, 1, 28, 10), 1.0, 0.25, 1.0), variant))
        for name, variants in VARIANTS.items()
        for variant in variants
    ]
    for label, spec in specs:
        model = build(spec)
        fvcore, counted = count_macs(model, spec.input_shape), count_macs(model, spec.input_shape, "torch")
        diff = (counted - fvcore) / fvcore
        worst, cases = max(worst, abs(diff)), cases + 1
        reference = TORCHVISION.get(label.removesuffix(" 224 px"))
        theirs = ("", "")
        if reference is not None:
            other = reference()
            theirs = tuple(f"{count_macs(other, spec.input_shape, c) / 1e6:.1f}" for c in ("fvcore", "torch"))
        print(
            f"{label:<37}{count_params(model) / 1e6:>10.2f}{fvcore / 1e6:>11.1f}{counted / 1e6:>11.1f}"
            f"{100 * diff:>+8.2f}{theirs[0]:>11}{theirs[1]:>11}"
        )
    print(f"max_rel_diff={worst:.5f} cases={cases}")


if __name__ == "__main__":
    main()
