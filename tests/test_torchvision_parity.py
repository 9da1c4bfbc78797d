"""Our specs against torchvision's models, which nobody here wrote: exact params, MACs within 0.5 %."""

from __future__ import annotations

import pytest
import torch
import torchvision

from scaler.model.complexity import count_macs, count_params
from scaler.model.nn.build import build
from scaler.model.zoo import EFFICIENTNET_FAMILY, base, efficientnet

CASES = [
    ("mobilenetv2", lambda: base("mobilenetv2"), torchvision.models.mobilenet_v2, 224),
    ("efficientnetv2-s", lambda: base("efficientnetv2-s"), torchvision.models.efficientnet_v2_s, 224),
    ("resnet50", lambda: base("resnet50"), torchvision.models.resnet50, 224),
] + [
    (
        f"efficientnet-{v}",
        (lambda v=v: efficientnet(v)),
        getattr(torchvision.models, f"efficientnet_{v}"),
        EFFICIENTNET_FAMILY[v][2],
    )
    for v in EFFICIENTNET_FAMILY
]


@pytest.mark.parametrize("name,ours,theirs,resolution", CASES, ids=[c[0] for c in CASES])
def test_matches_torchvision(name, ours, theirs, resolution) -> None:
    torch.manual_seed(0)
    spec = ours()
    assert spec.resolution == resolution
    model, reference = build(spec), theirs()
    assert count_params(model) == count_params(reference)
    shape = (3, resolution, resolution)
    ours_macs, their_macs = count_macs(model, shape), count_macs(reference, shape)
    assert abs(ours_macs - their_macs) / their_macs < 0.005, (ours_macs, their_macs)


def test_mobilenet_v1_matches_the_paper() -> None:
    """Howard et al. 2017, Table 8: 1.0 MobileNet-224 has 4.2 M params and 569 M mult-adds."""
    model = build(base("mobilenet"))
    assert count_params(model) == pytest.approx(4.23e6, rel=0.005)
    assert count_macs(model, (3, 224, 224)) == pytest.approx(569e6, rel=0.005)


def test_efficientnet_b0_matches_the_paper() -> None:
    """Tan & Le 2019, Table 2: B0 has 5.3 M params and 0.39 B FLOPs (multiply-adds)."""
    model = build(base("efficientnet-b0"))
    assert count_macs(model, (3, 224, 224)) == pytest.approx(0.39e9, rel=0.02)
