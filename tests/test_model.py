"""Every architecture the search space allows at a resolution builds and trains; others fail."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from helpers import compose
from iishpo.plan.memory_estimate import estimate_memory_mb
from iishpo.search.space import build_space
from iishpo.training.model import build_cnn

RESOLUTIONS = (8, 16, 32)
N_CLASSES = 10


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny networks: more threads only add synchronisation (and contention in CI)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def space_spec() -> dict[str, Any]:
    return compose("space=cnn_small").space


def _architectures(spec: dict[str, Any], resolution: int) -> list[dict[str, Any]]:
    """A sampled configuration for every (n_conv, n_fc) the space allows, plus one with the
    widest layers and the largest filters (the heaviest network)."""
    space = build_space(spec, resolution)
    rng = random.Random(resolution)
    configs = []
    for n_conv in range(1, int(space["n_conv"].high) + 1):
        for n_fc in range(1, int(space["n_fc"].high) + 1):
            sampled = space.sample(rng)
            config = space.project({**sampled, "n_conv": n_conv, "n_fc": n_fc}, rng)
            configs.append(config)
        heaviest = {
            **config,
            "filter_size": max(space["filter_size"].choices),  # type: ignore[type-var]
            **{k: space[k].high for k in config if space[k].active_if is not None},
        }
        configs.append(heaviest)
    for config in configs:
        space.validate(config)
    return configs


def test_space_bounds_the_depth_by_the_resolution(space_spec: dict[str, Any]) -> None:
    assert [build_space(space_spec, r)["n_conv"].high for r in RESOLUTIONS] == [2, 3, 4]


def layers(net: nn.Sequential) -> list[Any]:
    """Every module of ``net`` with the attributes that define it; others by class name."""
    out: list[Any] = []
    for m in net:
        if isinstance(m, nn.Conv2d):
            out.append(("conv", m.in_channels, m.out_channels, m.kernel_size, m.padding))
        elif isinstance(m, nn.MaxPool2d):
            out.append(("pool", m.kernel_size, m.stride))
        elif isinstance(m, nn.Linear):
            out.append(("linear", m.in_features, m.out_features))
        elif isinstance(m, nn.Dropout):
            out.append(("dropout", m.p))
        else:
            out.append(type(m).__name__)
    return out


POOL = ("pool", 2, 2)
#: (config, in_channels, resolution, n_classes, every layer written out by hand)
NETWORKS = [
    (
        {"filter_size": 5, "n_conv": 3, "conv_filters_0": 6, "conv_filters_1": 11,
         "conv_filters_2": 17, "n_fc": 2, "fc_units_0": 13, "fc_units_1": 9},
        3, 32, 10,
        [("conv", 3, 6, (5, 5), (2, 2)), "ReLU", POOL,
         ("conv", 6, 11, (5, 5), (2, 2)), "ReLU", POOL,
         ("conv", 11, 17, (5, 5), (2, 2)), "ReLU", POOL,  # 32 -> 16 -> 8 -> 4 px
         "Flatten", ("linear", 17 * 4 * 4, 13), "ReLU", ("linear", 13, 9), "ReLU",
         ("linear", 9, 10)],
    ),
    (
        {"filter_size": 7, "n_conv": 1, "conv_filters_0": 20, "n_fc": 1, "fc_units_0": 30,
         "fc_dropout_0": 0.25},
        1, 16, 3,
        [("conv", 1, 20, (7, 7), (3, 3)), "ReLU", POOL,  # 16 -> 8 px
         "Flatten", ("linear", 20 * 8 * 8, 30), "ReLU", ("dropout", 0.25), ("linear", 30, 3)],
    ),
    (
        {"filter_size": 3, "n_conv": 2, "conv_filters_0": 4, "conv_filters_1": 5, "n_fc": 3,
         "fc_units_0": 7, "fc_units_1": 8, "fc_units_2": 9,
         "fc_dropout_0": 0.1, "fc_dropout_1": 0.2, "fc_dropout_2": 0.3},
        3, 17, 2,
        [("conv", 3, 4, (3, 3), (1, 1)), "ReLU", POOL,
         ("conv", 4, 5, (3, 3), (1, 1)), "ReLU", POOL,  # 17 -> 8 -> 4 px
         "Flatten", ("linear", 5 * 4 * 4, 7), "ReLU", ("dropout", 0.1),
         ("linear", 7, 8), "ReLU", ("dropout", 0.2),
         ("linear", 8, 9), "ReLU", ("dropout", 0.3), ("linear", 9, 2)],
    ),
]


@pytest.mark.parametrize(("config", "channels", "resolution", "n_classes", "expected"), NETWORKS)
def test_every_layer_is_the_one_the_configuration_asks_for(
    config: dict[str, Any], channels: int, resolution: int, n_classes: int, expected: list[Any]
) -> None:
    net = build_cnn(config, in_channels=channels, resolution=resolution, n_classes=n_classes)
    assert layers(net) == expected
    assert net(torch.zeros(2, channels, resolution, resolution)).shape == (2, n_classes)


def test_dropout_is_active_in_training_only() -> None:
    config, channels, resolution, n_classes, _ = NETWORKS[1]
    net = build_cnn({**config, "fc_dropout_0": 0.9}, channels, resolution, n_classes)
    x = torch.randn(4, channels, resolution, resolution)
    net.eval()
    assert torch.equal(net(x), net(x))
    net.train()
    torch.manual_seed(0)
    assert not torch.equal(net(x), net(x))


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_every_allowed_architecture_builds_and_trains_a_step(
    space_spec: dict[str, Any], resolution: int
) -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 3, resolution, resolution)
    y = torch.tensor([0, 1, 2, 9])
    configs = _architectures(space_spec, resolution)
    assert {c["n_conv"] for c in configs} == set(
        range(1, int(build_space(space_spec, resolution)["n_conv"].high) + 1)
    )
    for config in configs:
        net = build_cnn(config, in_channels=3, resolution=resolution, n_classes=N_CLASSES)
        convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
        linears = [m for m in net if isinstance(m, torch.nn.Linear)]
        assert len(convs) == config["n_conv"] and len(linears) == config["n_fc"] + 1
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        before = [p.detach().clone() for p in net.parameters()]
        logits = net(x)
        assert logits.shape == (4, N_CLASSES)
        loss = torch.nn.functional.cross_entropy(logits, y)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
        optimizer.step()
        assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def test_grayscale_input_builds(space_spec: dict[str, Any]) -> None:
    config = build_space(space_spec, 16).sample(random.Random(1))
    net = build_cnn(config, in_channels=1, resolution=16, n_classes=3)
    assert net(torch.zeros(2, 1, 16, 16)).shape == (2, 3)


@pytest.mark.parametrize(("resolution", "n_conv"), [(8, 4), (16, 5), (32, 6), (4, 3)])
def test_too_deep_for_the_resolution_is_rejected(resolution: int, n_conv: int) -> None:
    config: dict[str, Any] = {"filter_size": 3, "n_conv": n_conv, "n_fc": 1, "fc_units_0": 8}
    config.update({f"conv_filters_{i}": 4 for i in range(n_conv)})
    fits = resolution.bit_length() - 1
    with pytest.raises(
        ValueError, match=rf"need at least {2**n_conv} px.*at most {fits} conv layers"
    ):
        build_cnn(config, in_channels=3, resolution=resolution, n_classes=N_CLASSES)


@pytest.mark.parametrize(("resolution", "n_conv"), [(8, 3), (4, 2), (2, 1)])
def test_as_deep_as_the_resolution_allows_builds(resolution: int, n_conv: int) -> None:
    config: dict[str, Any] = {"filter_size": 3, "n_conv": n_conv, "n_fc": 1, "fc_units_0": 8}
    config.update({f"conv_filters_{i}": 4 for i in range(n_conv)})
    net = build_cnn(config, in_channels=3, resolution=resolution, n_classes=N_CLASSES)
    # the last pooling leaves a 1 px map of 4 channels: the first fc layer reads 4 values
    assert next(m for m in net if isinstance(m, nn.Linear)).in_features == 4
    assert net(torch.zeros(2, 3, resolution, resolution)).shape == (2, N_CLASSES)


@pytest.mark.parametrize("counts", [{"n_conv": 0, "n_fc": 1}, {"n_conv": 1, "n_fc": 0}])
def test_no_layers_is_rejected(counts: dict[str, int]) -> None:
    config = {"filter_size": 3, "conv_filters_0": 4, "fc_units_0": 8, **counts}
    with pytest.raises(ValueError, match="need n_conv >= 1 and n_fc >= 1"):
        build_cnn(config, in_channels=3, resolution=8, n_classes=N_CLASSES)


#: one conv layer of 2 filters (3x3) on 4 px, one fc layer of 4 units
SMALL_CNN = {"n_conv": 1, "n_fc": 1, "filter_size": 3, "conv_filters_0": 2, "fc_units_0": 4}
#: two conv layers of 2 filters each: on 6 px, they pool to 3 px and then to 1 px
TWO_CONV = {**SMALL_CNN, "n_conv": 2, "conv_filters_1": 2}


@pytest.mark.parametrize(
    ("config", "in_channels", "resolution", "train_batch", "eval_batch", "values"),
    [
        # 1 channel: parameters 1*2*9+2 + 8*4+4 + 4*3+3 = 71; kept per sample: the input 16,
        # conv output 32, pooled 8, its indices 8*8/4 = 16, fc outputs 2*4 and 2*3: 86; the
        # largest activation 32, the heaviest weight 32 (fc); evaluation peak 2*32 = 64
        (SMALL_CNN, 1, 4, 5, 7, 3 * 71 + 5 * (86 + 2 * 32) + 2 * 32),  # training: 814
        (SMALL_CNN, 1, 4, 5, 100, 3 * 71 + 100 * 64),  # evaluation 6400 > training 814
        (SMALL_CNN, 1, 4, 0, 0, 3 * 71 + 71),  # the best-weights copy: params 71 > training 64
        # dropout after the fc layer keeps its output and mask: 2*4 more per sample
        ({**SMALL_CNN, "fc_dropout_0": 0.5}, 1, 4, 5, 7, 3 * 71 + 5 * (94 + 2 * 32) + 2 * 32),
        # 3 channels: parameters 3*2*9+2 + 36 + 15 = 107; kept 48 + 32 + 8 + 16 + 8 + 6 = 118;
        # the largest activation the input (48), the heaviest weight the conv's 54;
        # evaluation peak input + output 48 + 32 = 80
        (SMALL_CNN, 3, 4, 5, 7, 3 * 107 + 5 * (118 + 2 * 48) + 2 * 54),  # training: 1178
        (SMALL_CNN, 3, 4, 1, 100, 3 * 107 + 100 * 80),
        # two conv layers on 6 px, pooled to 3 px and 1 px (the second pooling counted as
        # 18 // 4 = 4 values where 2 exist, an overcount): parameters 20 + 38 + 12 + 15 = 85;
        # kept 36 + (72 + 18 + 36) + (18 + 4 + 8) + 8 + 6 = 206; largest 72; heaviest 36;
        # evaluation peak the first layer's 2*72 = 144
        (TWO_CONV, 1, 6, 5, 7, 3 * 85 + 5 * (206 + 2 * 72) + 2 * 36),  # training: 1822
        (TWO_CONV, 1, 6, 5, 100, 3 * 85 + 100 * 144),
        # a wide fc layer: its output and the next one's input, 2*40 = 80 values, the peak;
        # parameters 20 + 8*40+40 + 40*3+3 = 503; training only the penalties' 2*320
        ({**SMALL_CNN, "fc_units_0": 40}, 1, 4, 0, 100, 3 * 503 + 100 * 80),
    ],
)
def test_memory_estimate_counts_by_hand(
    config: dict[str, Any], in_channels: int, resolution: int, train_batch: int, eval_batch: int,
    values: int,
) -> None:
    estimate = estimate_memory_mb(config, in_channels, resolution, 3, train_batch, eval_batch)
    assert estimate == pytest.approx(values * 4 / 2**20, rel=1e-12)  # float32: 4 bytes a value
