"""FLGC: gradients, freezing and duplication, deployment to real grouped convs (exact outputs, MACs, BN folding)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

from scaler.model.complexity import count_macs
from scaler.model.nn.build import build
from scaler.model.nn.flgc import FLGCConv2d, balanced_assignment, freeze_assignments
from scaler.model.nn.flgc_deploy import (
    FASTEST,
    STRATEGIES,
    DeployedFLGC,
    deploy_flgc,
    flgc_macs,
    grouped_macs,
    splitting_pays,
)
from scaler.model.nn.flgc_fold import fold_permutations
from scaler.model.spec import NetSpec
from scaler.model.zoo import base


@torch.no_grad()
def perturb(layer: FLGCConv2d, seed: int = 0, balanced: bool = False) -> FLGCConv2d:
    """Random logits (unequal groups unless `balanced`), channel 0's logits high for every group and its weights
    10x larger; a duplicating layer is then frozen, so channel 0 is duplicated into the other groups (by either
    score), and the duplicates' connections drawn afresh, as training after the duplication would leave them."""
    layer.balanced = balanced
    generator = torch.Generator().manual_seed(seed)
    layer.in_logits.copy_(torch.randn(layer.in_logits.shape, generator=generator))
    layer.in_logits[0] = 5 + 0.1 * torch.arange(layer.groups)
    layer.out_logits.copy_(torch.randn(layer.out_logits.shape, generator=generator))
    layer.weight[:, 0] *= 10
    if layer.duplicate:
        layer.freeze()
        zeroed = layer.weight == 0
        noise = torch.randn(layer.weight.shape, generator=generator) * layer.weight.std()
        layer.weight.copy_(torch.where(zeroed, noise, layer.weight))
    return layer


def deployed_copy(layer: nn.Module, strategy: str, duplicates: str = "auto") -> nn.Module:
    """A deployed deep copy of `layer` (or of a model holding FLGC layers)."""
    return deploy_flgc(copy.deepcopy(layer), strategy, duplicates=duplicates)


def test_gradients_reach_logits_and_masked_weights() -> None:
    """Logits learn through the straight-through one-hot; weights a filter does not see get the gradient they
    would get if connected (so a connection that appears is trained), and the output ignores them."""
    torch.manual_seed(0)
    layer = FLGCConv2d(12, 10, 4)
    x, upstream = torch.randn(2, 12, 5, 5), torch.randn(2, 10, 5, 5)
    (layer(x) * upstream).sum().backward()
    for name in ("weight", "in_logits", "out_logits"):
        grad = getattr(layer, name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    masked = layer.mask() == 0
    dense_grad = torch.autograd.grad((nn.functional.conv2d(x, layer.weight) * upstream).sum(), layer.weight)[0]
    assert masked.any()
    torch.testing.assert_close(layer.weight.grad, dense_grad)
    with torch.no_grad():
        before = layer(x)
        layer.weight[masked] += 1.0
        torch.testing.assert_close(layer(x), before)


def test_without_masked_gradient_only_connections_in_use_learn() -> None:
    """masked_gradient False (the reference implementation's form): masked weights get no gradient at all."""
    torch.manual_seed(0)
    layer = FLGCConv2d(12, 10, 4)
    layer.masked_gradient = False
    x, upstream = torch.randn(2, 12, 5, 5), torch.randn(2, 10, 5, 5)
    (layer(x) * upstream).sum().backward()
    masked = (layer.mask() == 0).detach()
    assert layer.weight.grad is not None and layer.in_logits.grad is not None
    assert masked.any() and (layer.weight.grad[masked] == 0).all() and layer.weight.grad[~masked].abs().sum() > 0
    assert layer.in_logits.grad.abs().sum() > 0


@pytest.mark.parametrize("score", ["logit", "weight"])
def test_duplication_preserves_the_function(score: str) -> None:
    """At the freeze, the duplicates' new connections start at zero: the layer computes exactly what it did,
    whichever score picked them; the weights of connections already in use are untouched."""
    torch.manual_seed(2)
    layer = FLGCConv2d(16, 12, 4, duplicate=True, score=score)
    with torch.no_grad():
        layer.in_logits[0] = 5 + 0.1 * torch.arange(4)
        layer.weight[:, 0] *= 10
    x = torch.randn(3, 16, 5, 5)
    before, mask, weight = layer(x).detach(), layer.mask().detach().clone(), layer.weight.detach().clone()
    layer.freeze()
    assert layer.duplicated_channels() > 0
    added = (layer.mask() > 0) & (mask == 0)
    assert added.any() and (layer.weight[added] == 0).all()
    assert torch.equal(layer.weight[~added], weight[~added])
    torch.testing.assert_close(layer(x), before, atol=0, rtol=0)


def test_initial_assignment_is_random_and_recorded() -> None:
    """Logits start N(0, 1) (as the paper and its reimplementation): groups differ by seed, equal in size by
    default and unequal when free; the start is recorded so that `moved` counts what left it."""
    torch.manual_seed(0)
    first, second = FLGCConv2d(64, 48, 4), FLGCConv2d(64, 48, 4)
    assert not torch.equal(first.start_in, second.start_in) and first.moved() == 0
    assert torch.equal(first.start_in, balanced_assignment(first.in_logits))
    assert first.group_sizes() == [(16, 12)] * 4
    free = FLGCConv2d(64, 48, 4, balanced=False)
    assert torch.equal(free.start_in, free.in_logits.argmax(1)) and free.moved() == 0
    assert len({n_in for n_in, _ in free.group_sizes()}) > 1
    with torch.no_grad():
        free.in_logits[0, (int(free.start_in[0]) + 1) % 4] += 10
        free.out_logits[3, (int(free.start_out[3]) + 1) % 4] += 10
    assert free.moved() == 2
    assert torch.equal(FLGCConv2d(5, 3, 1).mask(), torch.ones(3, 5))


@pytest.mark.parametrize("shape", [(24, 4), (64, 16), (10, 3), (7, 7), (5, 1)])
def test_balanced_assignment_is_stable_and_fills_groups_equally(shape: tuple[int, int]) -> None:
    """Every column holds at most ceil(rows / columns) rows (exactly rows / columns when it divides), and no row
    would rather be in a column that has room or holds a row with a lower logit for it (a stable matching)."""
    rows, columns = shape
    capacity = -(-rows // columns)
    for seed in range(5):
        logits = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        chosen = balanced_assignment(logits)
        held = torch.bincount(chosen, minlength=columns)
        assert held.sum() == rows and held.max() <= capacity
        if rows % columns == 0:
            assert (held == rows // columns).all()
        for row in range(rows):
            for column in range(columns):
                if logits[row, column] > logits[row, chosen[row]]:
                    members = (chosen == column).nonzero().flatten()
                    assert len(members) == capacity and (logits[members, column] > logits[row, column]).all()


def test_balanced_assignment_is_the_argmax_when_that_fits() -> None:
    logits = torch.randn(12, 3, generator=torch.Generator().manual_seed(0))
    logits[torch.arange(12), torch.arange(12) % 3] += 10
    assert torch.equal(balanced_assignment(logits), torch.arange(12) % 3)
    crowded = logits.clone()
    crowded[0] = torch.tensor([0.0, 30.0, 0.0])  # row 0 wants full column 1 more than any of its members do
    members = torch.arange(1, 12, 3)
    bumped = int(members[logits[members, 1].argmin()])  # the member that wants column 1 least goes to 0's room
    expected = torch.arange(12) % 3
    expected[0], expected[bumped] = 1, 0
    assert torch.equal(balanced_assignment(crowded), expected)


def test_equal_groups_stay_equal_while_groups_learn_and_deploy_as_one_contiguous_kernel() -> None:
    """Through training steps that move channels between groups, every group keeps in/G channels and out/G
    filters; frozen, the layer deploys as one grouped kernel of the dense layer's size divided by G (no padding)."""
    torch.manual_seed(8)
    layer = FLGCConv2d(32, 16, 4, kernel_size=3)
    optimizer = torch.optim.SGD([layer.in_logits, layer.out_logits], lr=50.0)
    x, upstream = torch.randn(4, 32, 5, 5), torch.randn(4, 16, 5, 5)
    for _ in range(10):
        optimizer.zero_grad()
        (layer(x) * upstream).sum().backward()
        optimizer.step()
        assert layer.group_sizes() == [(8, 4)] * 4
    assert layer.moved() > 0
    layer.freeze()
    assert layer.group_sizes() == [(8, 4)] * 4
    layer.eval()
    for strategy in ("padded", "padded_matmul", "bucketed"):
        deployed = deployed_copy(layer, strategy)
        assert isinstance(deployed, DeployedFLGC)
        (kernel,) = deployed.group_convs()
        assert (kernel.in_channels, kernel.out_channels, kernel.groups) == (32, 16, 4) and deployed.emits_raw()
        with torch.no_grad():
            torch.testing.assert_close(deployed(x), layer(x), atol=1e-5, rtol=0)


def by_hand_layer(score: str) -> FLGCConv2d:
    """G = 2: channels 0-2 and filters 0-1 in group 0, channels 3-5 and filters 2-3 in group 1."""
    layer = FLGCConv2d(6, 4, 2, duplicate=True, top_k=3, score=score)
    with torch.no_grad():
        layer.in_logits.copy_(torch.tensor([[2.0, 0], [1.5, 0], [1.0, 0], [0, 1.0], [0, 1.0], [0, 1.0]]))
        layer.out_logits.copy_(torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]]))
        # |W| summed over a group's filters, per channel: group 0 sees 3, 2, 1 from its members (mean 2),
        # 2.5 from channel 3 (beats it) and 1.5 from channel 4; group 1 sees 1 from each member, 0.5 from others.
        to_group_0 = torch.tensor([3.0, 2.0, 1.0, 2.5, 1.5, 0.2])
        to_group_1 = torch.tensor([0.5, 0.5, 0.5, 1.0, 1.0, 1.0])
        weight = torch.stack([to_group_0 / 2, -to_group_0 / 2, to_group_1 / 2, to_group_1 / 2])
        layer.weight.copy_(weight[:, :, None, None])
    return layer


def test_duplication_rule_by_hand() -> None:
    """Weight score: a channel outside a group whose L1 weight to the group beats the mean of the group's top 3
    members is duplicated into it, and nothing else; logit score: the raw logits, not normalised over groups."""
    layer = by_hand_layer("weight")
    assert layer.duplication_margin() == pytest.approx((2.5 - 2.0) / 2.0)
    layer.freeze()
    member_in, member_out = layer.assignment()
    expected = torch.tensor([[1, 0], [1, 0], [1, 0], [1, 1], [0, 1], [0, 1]], dtype=torch.bool)
    assert torch.equal(member_in, expected) and layer.duplicated_channels() == 1
    assert layer.group_sizes() == [(4, 2), (3, 2)]
    logit = by_hand_layer("logit")  # group 0: members 2, 1.5, 1 (mean 1.5), no outsider above 0; group 1: mean 1
    assert logit.duplication_margin() == pytest.approx(0.0 - 1.0)
    logit.freeze()
    assert logit.duplicated_channels() == 0


def test_duplication_cap_keeps_the_largest_margins_within_the_layers_macs() -> None:
    """Capped, duplication adds at most the cap's share of the layer's connections, largest margins first: by
    hand (one duplicate costing 2 of 12 connections fits a cap of 0.2, not 0.1) and on a random layer (the kept
    duplicates are the uncapped ones with the largest margins, and fill the budget to within one duplicate)."""
    for cap, added in ((0.1, 0), (0.2, 1), (None, 1)):
        layer = by_hand_layer("weight")
        layer.duplicate_cap = cap
        layer.freeze()
        assert layer.duplicated_channels() == added
    torch.manual_seed(0)
    uncapped = FLGCConv2d(64, 32, 8, duplicate=True)
    with torch.no_grad():
        uncapped.in_logits[:16] += 5  # 16 channels that rank high in every group: duplicates everywhere
    capped = copy.deepcopy(uncapped)
    capped.duplicate_cap = 0.1
    member_in, member_out = uncapped.learned()
    scores = uncapped.scores(member_out)
    all_extra, kept = uncapped.duplicates(member_in, member_out), capped.duplicates(member_in, member_out)
    base = int((member_in.sum(0) * member_out.sum(0)).sum())
    per_duplicate = 32 // 8
    assert all_extra.sum() * per_duplicate > 0.1 * base  # the cap binds
    assert (kept & ~all_extra).sum() == 0 and kept.sum() * per_duplicate <= 0.1 * base
    assert (kept.sum() + 1) * per_duplicate > 0.1 * base
    threshold = scores.masked_fill(~member_in, -torch.inf).topk(3, dim=0).values.mean(0)
    margin = scores - threshold
    assert margin[kept].min() >= margin[all_extra & ~kept].max()
    capped.freeze()
    assert capped.duplicated_channels() == int(kept.sum()) < capped.rule_duplicates() == int(all_extra.sum())


def test_freeze_fixes_the_assignment() -> None:
    """After freezing, the logits no longer matter or learn; the frozen state survives a state_dict round trip."""
    torch.manual_seed(1)
    layer = perturb(FLGCConv2d(16, 12, 4, duplicate=True))
    assert layer.frozen and layer.duplicated_channels() > 0
    mask = layer.mask().clone()
    x = torch.randn(2, 16, 3, 3)
    layer(x).square().mean().backward()
    assert layer.in_logits.grad is None or layer.in_logits.grad.abs().sum() == 0
    with torch.no_grad():
        layer.in_logits.normal_()
    assert torch.equal(layer.mask(), mask)
    copy_ = FLGCConv2d(16, 12, 4, duplicate=True)
    copy_.load_state_dict(layer.state_dict())
    assert copy_.frozen and torch.equal(copy_.mask(), mask)
    plain = FLGCConv2d(16, 12, 4)
    freeze_assignments(nn.Sequential(plain))
    assert plain.frozen and plain.duplicated_channels() == 0


@pytest.mark.parametrize("balanced", [False, True])
@pytest.mark.parametrize("duplicate", [False, True])
@pytest.mark.parametrize("groups", [1, 2, 3, 4, 8])
def test_deployed_equals_training_form(groups: int, duplicate: bool, balanced: bool) -> None:
    torch.manual_seed(groups)
    layer = perturb(FLGCConv2d(24, 20, groups, duplicate=duplicate), seed=groups, balanced=balanced).eval()
    sizes = layer.group_sizes()
    assert sum(n_out for _, n_out in sizes) == 20
    assert sum(n_in for n_in, _ in sizes) == 24 + layer.duplicated_channels()
    if duplicate and groups >= 2:
        assert layer.duplicated_channels() > 0
    if groups > 1 and not balanced:
        assert len(set(sizes)) > 1
    if balanced and not duplicate:
        assert max(sizes) <= (-(-24 // groups), -(-20 // groups))
    x = torch.randn(3, 24, 6, 6)
    with torch.no_grad():
        expected = layer(x)
        for strategy in STRATEGIES:
            deployed = deployed_copy(layer, strategy)
            assert isinstance(deployed, DeployedFLGC)
            torch.testing.assert_close(deployed(x), expected, atol=1e-5, rtol=0, msg=strategy)
            x_last = x.contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(deployed(x_last), expected, atol=1e-5, rtol=0, msg=strategy)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_kxk_strided_uneven_channels(strategy: str) -> None:
    torch.manual_seed(1)
    layer = perturb(FLGCConv2d(10, 14, 3, kernel_size=3, stride=2, duplicate=True)).eval()
    x = torch.randn(2, 10, 9, 9)
    with torch.no_grad():
        expected = layer(x)
        assert expected.shape == (2, 14, 5, 5)
        torch.testing.assert_close(deployed_copy(layer, strategy)(x), expected, atol=1e-5, rtol=0)


def test_inference_plan_is_kept_per_input_and_follows_the_weights() -> None:
    """A single-kernel layer runs a plan kept per input shape and layout; fusing a BatchNorm or changing the
    weights in place builds a new one, so outputs always match the training form."""
    torch.manual_seed(5)
    layer = perturb(FLGCConv2d(16, 12, 4), balanced=True).eval()
    layer.freeze()
    deployed = deployed_copy(layer, "padded_matmul")
    assert isinstance(deployed, DeployedFLGC)
    x = torch.randn(2, 16, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), layer(x), atol=1e-5, rtol=0)
        (plan,) = deployed.plans.values()
        deployed(torch.randn(2, 16, 4, 4))
        assert list(deployed.plans.values()) == [plan]
        deployed(x.transpose(0, 1).contiguous().transpose(0, 1))  # a channel-major batch: a plan of its own
        assert len(deployed.plans) == 2
        bn = nn.BatchNorm2d(12).eval()
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 2)
        deployed.fuse_bn(bn)
        torch.testing.assert_close(deployed(x), bn(layer(x)), atol=1e-5, rtol=0)
        deployed.group_convs()[0].weight.mul_(2)
        changed = deployed(x)
        kept = len(deployed.plans)
    with torch.enable_grad():  # autograd on: a fresh plan on the weights themselves, none kept
        out = deployed(x)
        torch.testing.assert_close(changed, out.detach(), atol=1e-5, rtol=0)
        out.sum().backward()
    assert len(deployed.plans) == kept
    assert deployed.group_convs()[0].weight.grad is not None
    assert not torch.allclose(changed, bn(layer(x)), atol=1e-2)


def scratch_pointers(layer: DeployedFLGC) -> set[int]:
    """Where the layer's kept scratch tensors live: its workspaces and its inference plans' buffers."""
    kept = list(layer.workspaces.values())
    kept += [t for plan in layer.plans.values() for t in (plan.gathered, plan.product) if t is not None]
    return {tensor.data_ptr() for tensor in kept}


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s.endswith("_matmul")])
def test_scratch_reused_without_aliasing(strategy: str) -> None:
    """Inference reuses gather/product scratch across calls, yet an output is never overwritten by the next
    call; with autograd on, no scratch is used and gradients flow to the input."""
    torch.manual_seed(3)
    layer = perturb(FLGCConv2d(16, 12, 4, duplicate=True)).eval()
    deployed = deployed_copy(layer, strategy)
    first, second = torch.randn(3, 16, 4, 4), torch.randn(3, 16, 4, 4)
    with torch.no_grad():
        out_first = deployed(first)
        kept = out_first.clone()
        scratch = scratch_pointers(deployed)
        out_second = deployed(second)
        assert scratch and scratch == scratch_pointers(deployed)
        torch.testing.assert_close(out_first, kept, atol=0, rtol=0)
        torch.testing.assert_close(out_second, layer(second), atol=1e-5, rtol=0)
        torch.testing.assert_close(deployed(torch.randn(1, 16, 4, 4)).shape, torch.Size([1, 12, 4, 4]))
    x = first.clone().requires_grad_()
    deployed(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_fastest_strategy_is_a_measured_choice() -> None:
    """`fastest` deploys every layer with one of the strategies, timed on the example batch; outputs equal."""
    torch.manual_seed(4)
    model = nn.Sequential(
        perturb(FLGCConv2d(16, 24, 4)), nn.ReLU(), perturb(FLGCConv2d(24, 16, 4, kernel_size=3, duplicate=True))
    ).eval()
    x = torch.randn(4, 16, 6, 6)
    with torch.no_grad():
        expected = model(x)
        deployed = deploy_flgc(copy.deepcopy(model), FASTEST, example=x)
        torch.testing.assert_close(deployed(x), expected, atol=1e-5, rtol=0)
    strategies = [m.strategy for m in deployed.modules() if isinstance(m, DeployedFLGC)]
    assert len(strategies) == 2 and set(strategies) <= set(STRATEGIES)
    assert not strategies[1].endswith("_matmul")  # a 3x3 layer has no matmul form to time
    with pytest.raises(ValueError, match="example"):
        deploy_flgc(copy.deepcopy(model), FASTEST)


def starved_layer() -> FLGCConv2d:
    """G=3 (free sizes): group 2 has filters but no inputs, group 1 has inputs but no filters."""
    layer = FLGCConv2d(6, 9, 3, balanced=False)
    with torch.no_grad():
        layer.in_logits.copy_(torch.tensor([[5.0, 0, -5]] * 3 + [[0, 5.0, -5]] * 3))
        layer.out_logits.copy_(torch.tensor([[5.0, 0, 0], [0, 0, 5.0], [0, 0, 5.0]] * 3))
    return layer.eval()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_empty_groups(strategy: str) -> None:
    layer = starved_layer()
    assert layer.group_sizes() == [(3, 3), (3, 0), (0, 6)]
    x = torch.randn(2, 6, 4, 4)
    with torch.no_grad():
        out = deployed_copy(layer, strategy)(x)
        torch.testing.assert_close(out, layer(x), atol=1e-5, rtol=0)
    assert out.shape == (2, 9, 4, 4) and out[:, 1::3].abs().max() == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_fuse_bn(strategy: str) -> None:
    torch.manual_seed(2)
    for layer in (perturb(FLGCConv2d(16, 12, 4, duplicate=True)), starved_layer()):
        bn = nn.BatchNorm2d(layer.out_channels).eval()
        with torch.no_grad():
            for tensor in (bn.weight, bn.bias, bn.running_mean):
                tensor.normal_()
            bn.running_var.uniform_(0.5, 2.0)
        deployed = deployed_copy(layer, strategy)
        x = torch.randn(2, layer.in_channels, 5, 5)
        with torch.no_grad():
            expected = bn(layer.eval()(x))
            deployed.fuse_bn(bn)
            torch.testing.assert_close(deployed(x), expected, atol=1e-5, rtol=0)


def test_fvcore_macs_of_deployed_layers() -> None:
    """fvcore counts exactly sum_g |in_g||out_g| k^2 H_out W_out (= flgc_macs) on per_group deployments;
    padded and bucketed ones run, and fvcore counts, each bucket's zero-padded sizes instead."""
    torch.manual_seed(3)
    first = perturb(FLGCConv2d(10, 14, 3, kernel_size=3, stride=2, duplicate=True), seed=1)
    second = perturb(FLGCConv2d(14, 8, 4), seed=2)
    model = nn.Sequential(first, nn.BatchNorm2d(14), nn.ReLU(), second).eval()
    expected = flgc_macs(first, 5, 5) + flgc_macs(second, 5, 5)
    assert expected == sum(
        sum(a * b for a, b in layer.group_sizes()) * layer.kernel_size**2 * 25 for layer in (first, second)
    )
    assert expected < (10 * 14 * 9 + 14 * 8) * 25
    assert count_macs(model, (10, 9, 9)) == expected  # training form counted as deployed per group
    assert grouped_macs(model, (10, 9, 9)) == expected
    assert isinstance(model[0], FLGCConv2d)
    assert flgc_macs(deployed_copy(first, "per_group"), 5, 5) == flgc_macs(first, 5, 5)
    for strategy in STRATEGIES:
        deployed = deployed_copy(model, strategy)
        kernels = [kernel for layer in (deployed[0], deployed[3]) for kernel in [*layer.convs, *layer.extras]]
        run_macs = sum(kernel.weight.numel() * 25 for kernel in kernels)
        assert count_macs(deployed, (10, 9, 9)) == run_macs >= expected
        if strategy.startswith("per_group"):
            assert run_macs == expected


@pytest.mark.parametrize("strategy", ["padded", "padded_matmul", "bucketed_matmul"])
@pytest.mark.parametrize("batch", [1, 5])
def test_folded_permutations_keep_outputs(strategy: str, batch: int) -> None:
    """Each layer hands its rows on in group order and the next gathers them once: the chain computes what the
    masked layers do; only single-kernel producers fold (bucketed may split a layer into several kernels)."""
    torch.manual_seed(7)
    layers = [perturb(FLGCConv2d(12, 20, 4, duplicate=True), seed=1), perturb(FLGCConv2d(20, 16, 4), seed=2)]
    chain = nn.Sequential(layers[0], nn.ReLU(), layers[1], nn.ReLU(), perturb(FLGCConv2d(16, 8, 2, duplicate=True)))
    chain.eval()
    deployed = deployed_copy(chain, strategy)
    x = torch.randn(batch, 12, 6, 6)
    with torch.no_grad():
        expected = chain(x)
        torch.testing.assert_close(deployed(x), expected, atol=1e-5, rtol=1e-5)  # row indices kept before folding
        folded = fold_permutations(deployed)
        assert folded == sum(int(deployed[i].emits_raw() or not deployed[i].permute_outputs) for i in (0, 2))
        if strategy != "bucketed_matmul":
            assert folded == 2 and not deployed[0].permute_outputs and deployed[4].permute_outputs
        torch.testing.assert_close(deployed(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("strategy", ["padded", "padded_matmul"])
@pytest.mark.parametrize("batch", [1, 5])
def test_permutations_fold_into_dense_neighbours(strategy: str, batch: int) -> None:
    """dense -> FLGC -> dense -> FLGC with equal groups: the dense convs take the permutations (filters reordered
    for the reader, input channels for the producer), so only the last layer's output permutation is left; a
    reader whose duplicates run as kernels of their own folds its own groups' gather too and gathers only its
    duplicates; one that pads its groups for them keeps its gather."""
    torch.manual_seed(9)
    for duplicate, form in ((False, "auto"), (True, "padded"), (True, "split")):
        last = FLGCConv2d(16, 8, 4, duplicate=duplicate)
        if duplicate:
            perturb(last, seed=3, balanced=True)
        chain = nn.Sequential(
            nn.Conv2d(6, 16, 3, padding=1), nn.ReLU(), FLGCConv2d(16, 24, 4), nn.ReLU(), nn.Conv2d(24, 16, 1), last
        ).eval()
        deployed = deployed_copy(chain, strategy, form)
        x = torch.randn(batch, 6, 5, 5)
        split = form == "split"
        with torch.no_grad():
            expected = chain(x)
            assert fold_permutations(deployed) == (2 if form == "padded" else 3)
            assert not any(deployed[2].gather_inputs) and not deployed[2].permute_outputs
            assert any(deployed[5].gather_inputs) == (form == "padded") and deployed[5].permute_outputs
            assert bool(len(deployed[5].extras)) == split
            torch.testing.assert_close(deployed(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("strategy", ["padded", "padded_matmul"])
def test_duplicates_cost_their_own_product(strategy: str) -> None:
    """With equal own groups and a few duplicates, the deployed layer is the unpadded grouped kernel plus one
    small kernel per group that gained any, reading only its duplicates (no padding), and computes what the
    masked layer does, BN folded, at batch 1 and 4."""
    layer = perturb(FLGCConv2d(32, 16, 4, duplicate=True), seed=5, balanced=True)
    gained = (layer.assignment()[0].sum(0) - 8).tolist()
    assert gained == [1, 2, 1, 0]
    bn = nn.BatchNorm2d(16).eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
        bn.weight.normal_()
    chain = nn.Sequential(layer, bn).eval()
    assert not len(deployed_copy(layer, strategy).extras)  # padding by 2 costs less than 3 more passes
    deployed = deployed_copy(layer, strategy, "split")
    deployed.fuse_bn(bn)
    assert deployed.group_convs()[0].weight.shape == (16, 8, 1, 1)
    assert [conv.weight.shape for conv in deployed.extra_convs()] == [(4, n, 1, 1) for n in (1, 2, 1)]
    for batch in (1, 4):
        x = torch.randn(batch, 32, 5, 5)
        with torch.no_grad():
            torch.testing.assert_close(deployed(x), chain(x), atol=1e-5, rtol=1e-5)


def test_splitting_pays_where_duplicates_land_unevenly() -> None:
    """Kernels of their own pay when padding every group would cost more than a pass over the gainers' rows."""
    assert not splitting_pays([1, 2, 1, 0]) and not splitting_pays([21, 52, 33, 29])
    assert splitting_pays([24, 0, 0, 0]) and splitting_pays([64, 0, 0, 0, 0, 0, 0, 0])
    assert not splitting_pays([8, 0, 0, 0])


def test_tiny_model_trains() -> None:
    torch.manual_seed(4)
    model = nn.Sequential(FLGCConv2d(8, 16, 4), nn.BatchNorm2d(16), nn.ReLU(), FLGCConv2d(16, 4, 2, duplicate=True))
    x, target = torch.randn(16, 8, 4, 4), torch.randn(16, 4, 4, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
    assert model[0].in_logits.grad.abs().sum() > 0 and model[3].out_logits.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(deployed_copy(model, "per_group")(x), model(x), atol=1e-5, rtol=0)


def small_spec(groups: int, duplicate: bool) -> NetSpec:
    """The first three MobileNet stages at 28 px with FLGC 1x1 convs."""
    spec = base("mobilenet", 1, 28, 10)
    stages = tuple(dataclasses.replace(s, groups=groups, duplicate=duplicate) for s in spec.stages[:3])
    return dataclasses.replace(spec, stages=stages)


def test_build_and_deploy() -> None:
    spec = small_spec(groups=4, duplicate=False)
    torch.manual_seed(5)
    model = build(spec).eval()
    layers = [m for m in model.modules() if isinstance(m, FLGCConv2d)]
    assert layers and {(m.groups, m.kernel_size, m.duplicate) for m in layers} == {(4, 1, False)}
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        expected = model(x)
        macs = count_macs(model, (1, 28, 28))
        assert macs < count_macs(build(small_spec(groups=1, duplicate=False)), (1, 28, 28))
        assert count_macs(deployed_copy(model, "per_group"), (1, 28, 28)) == macs
        deployed = deploy_flgc(model)
        assert not any(isinstance(m, FLGCConv2d) for m in deployed.modules())
        torch.testing.assert_close(deployed(x), expected, atol=1e-5, rtol=1e-5)


def test_deploy_pipeline_keeps_outputs() -> None:
    """scaler.model.nn.deploy.deploy (FLGC deployed, BN folded, shifts) computes what the trained model does."""
    from scaler.model.nn.deploy import deploy

    torch.manual_seed(6)
    model = build(small_spec(groups=4, duplicate=True))
    for layer in model.modules():
        if isinstance(layer, FLGCConv2d):
            perturb(layer)
    model.train()(torch.randn(8, 1, 28, 28))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(deploy(model, compile=False)(x), model.eval()(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("groups", [2, 4, 8])
def test_duplication_margin_says_whether_duplication_fires(groups: int) -> None:
    """margin > 0 exactly when freezing duplicates some channel; with weight scores it fires at G = 2 too.
    Equal weights tie every channel with the threshold: nothing is duplicated."""
    fired = []
    for seed in range(12):
        torch.manual_seed(seed)
        layer = FLGCConv2d(24, 16, groups, duplicate=True, score="weight")
        with torch.no_grad():
            if seed % 2:
                layer.weight[:, seed] *= 4
            else:
                layer.weight.fill_(0.125)  # exact in float32: every score ties exactly
        margin = layer.duplication_margin()
        layer.freeze()
        assert (margin > 0) == (layer.duplicated_channels() > 0), (seed, margin)
        fired.append(margin > 0)
    assert any(fired) and not all(fired)
