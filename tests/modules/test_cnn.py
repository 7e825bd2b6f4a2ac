"""Convolutional network (ch. 6): convolution arithmetic (with dilation) vs nn.Conv2d, VGG-style, residual and
inception blocks, fitting."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from modules.cnn import ConvolutionalNetwork, InceptionBlock, ResidualBlock, conv_bn, conv_output_size
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig

from conftest import fit_batch

ADAM = OptimizerConfig(name="adam", lr=1e-2, weight_decay=0.0, momentum=0.0, nesterov=False)
NO_SCHEDULE = SchedulerConfig(name="none", step_size=1, gamma=1.0, warmup_epochs=0)
DIGITS = DataSpec("multiclass", (1, 8, 8), 10)


def make_network(spec: DataSpec = DIGITS, **overrides) -> ConvolutionalNetwork:
    model = {
        "channels": [4, 8],
        "block": "plain",
        "units_per_block": 1,
        "kernel_size": 3,
        "padding": 1,
        "stride": 1,
        "dilation": 1,
        "pool": "max",
        "batch_norm": False,
        "dropout": 0.0,
    }
    model.update(overrides)
    ConvolutionalNetwork.check_config(model, spec)
    return ConvolutionalNetwork(data=spec, optimizer=ADAM, scheduler=NO_SCHEDULE, **model)


def receptive_field(module: nn.Module, channels: int, side: int = 15) -> int:
    """Width of the input square that the centre output pixel depends on, read off the gradient's support."""
    x = torch.randn(1, channels, side, side, requires_grad=True)
    y = module(x)
    y[0, :, y.shape[-2] // 2, y.shape[-1] // 2].sum().backward()
    columns = (x.grad[0].abs().sum(dim=(0, 1)) > 0).nonzero()
    return int(columns.max() - columns.min() + 1)


@pytest.mark.parametrize("kernel_size", [1, 2, 3, 5])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_conv_output_size_matches_nn_conv2d(kernel_size, stride, dilation):
    for n in (5, 8, 11, 16):
        for padding in (0, 1, 2, 3):
            if n + 2 * padding < dilation * (kernel_size - 1) + 1:
                continue
            conv = nn.Conv2d(1, 1, kernel_size, stride=stride, padding=padding, dilation=dilation)
            side = conv(torch.zeros(1, 1, n, n)).shape[-1]
            assert conv_output_size(n, kernel_size, padding, stride, dilation) == side, (n, kernel_size, padding, stride, dilation)


def test_conv_output_size_of_two_by_two_pooling_halves_the_side():
    for n in range(2, 12):
        assert conv_output_size(n, 2, 0, 2) == nn.MaxPool2d(2)(torch.zeros(1, 1, n, n)).shape[-1] == n // 2


@pytest.mark.parametrize(("kernel_size", "dilation"), [(3, 2), (3, 3), (2, 4), (5, 2)])
def test_a_dilated_kernel_is_a_larger_kernel_with_zeros_between_its_taps(kernel_size, dilation):
    torch.manual_seed(0)
    (conv,) = conv_bn(2, 3, kernel_size, padding=dilation, stride=1, dilation=dilation, batch_norm=False)
    span = dilation * (kernel_size - 1) + 1
    spread = torch.zeros(3, 2, span, span)
    spread[:, :, ::dilation, ::dilation] = conv.weight.detach()
    x = torch.randn(2, 2, 9, 9)
    torch.testing.assert_close(conv(x), F.conv2d(x, spread, conv.bias, padding=dilation))
    assert receptive_field(conv, 2) == span


@pytest.mark.parametrize(
    ("spec", "overrides"),
    [
        (DIGITS, {}),
        (DIGITS, {"pool": "avg", "batch_norm": True}),
        (DIGITS, {"pool": "none"}),
        (DIGITS, {"pool": "none", "stride": 2}),
        (DIGITS, {"channels": [4, 4, 4, 4], "stride": 1}),  # pooling stops once the side is 1
        (DIGITS, {"kernel_size": 5, "padding": 2, "stride": 2, "pool": "max"}),
        (DIGITS, {"kernel_size": 3, "padding": 0, "pool": "none", "channels": [4, 4]}),
        (DIGITS, {"dilation": 2, "padding": 2}),
        (DIGITS, {"dilation": 2, "padding": 0, "pool": "none", "channels": [4]}),  # 8 -> 4
        (DIGITS, {"units_per_block": 3, "pool": "avg"}),
        (DIGITS, {"units_per_block": 2, "padding": 0, "pool": "none", "channels": [4]}),  # 8 -> 6 -> 4
        (DIGITS, {"units_per_block": 2, "stride": 2, "pool": "none"}),  # only each block's first unit strides
        (DIGITS, {"block": "residual"}),
        (DIGITS, {"block": "residual", "channels": [1, 4], "pool": "none"}),
        (DIGITS, {"block": "residual", "stride": 2, "batch_norm": True, "pool": "none"}),
        (DIGITS, {"block": "residual", "units_per_block": 2, "dilation": 2, "padding": 2}),
        (DataSpec("binary", (3, 13, 13), 2), {"block": "residual", "stride": 2, "channels": [3, 6]}),
        (DIGITS, {"block": "inception"}),
        (DIGITS, {"block": "inception", "units_per_block": 2, "batch_norm": True}),
        (DIGITS, {"block": "inception", "stride": 2, "pool": "none", "kernel_size": 5, "padding": 2}),
        (DataSpec("binary", (3, 13, 13), 2), {"block": "inception", "stride": 3, "dilation": 3, "padding": 3}),
        (DataSpec("regression", (2, 11, 11), 0), {"kernel_size": 2, "padding": 0, "stride": 2, "pool": "avg"}),
    ],
)
def test_feature_shape_from_the_formula_equals_the_real_shape(spec, overrides):
    torch.manual_seed(0)
    network = make_network(spec, **overrides)
    network.eval()
    x = torch.randn(2, *spec.input_shape)
    with torch.no_grad():
        assert tuple(network.features(x).shape[1:]) == network.feature_shape
        assert network(x).shape == (2, spec.num_outputs)


def test_pooling_layers_follow_the_pool_setting():
    assert sum(isinstance(m, nn.MaxPool2d) for m in make_network(pool="max").features) == 2
    assert sum(isinstance(m, nn.AvgPool2d) for m in make_network(pool="avg").features) == 2
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in make_network(pool="none").features)


def test_plain_units_are_flat_layers_so_the_default_networks_keep_their_parameter_names():
    """The scorer's weights (pipeline.core.scoring) load by these names."""
    network = make_network(batch_norm=True)
    assert [name for name, _ in network.named_parameters()] == [
        "features.0.weight", "features.1.weight", "features.1.bias",  # conv (no bias before BN), BN
        "features.4.weight", "features.5.weight", "features.5.bias",  # after ReLU and pooling
        "head.2.weight", "head.2.bias",
    ]


def test_a_vgg_block_stacks_its_convolutions_before_one_pooling():
    network = make_network(channels=[4, 8], units_per_block=3, pool="max")
    kinds = [type(m).__name__ for m in network.features]
    assert kinds == ["Conv2d", "ReLU"] * 3 + ["MaxPool2d"] + ["Conv2d", "ReLU"] * 3 + ["MaxPool2d"]
    convs = [m for m in network.features if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 4), (4, 4), (4, 4), (4, 8), (8, 8), (8, 8)]
    two = make_network(channels=[4], units_per_block=2, pool="none")
    assert receptive_field(two.features, 1) == 5  # two 3 x 3 convolutions see what one 5 x 5 sees


def test_convolutions_drop_their_bias_before_batch_norm():
    conv, norm = conv_bn(3, 5, 3, 1, 1, 1, batch_norm=True)
    assert conv.bias is None and isinstance(norm, nn.BatchNorm2d)
    (conv,) = conv_bn(3, 5, 3, 1, 1, 1, batch_norm=False)
    assert conv.bias is not None


@pytest.mark.parametrize(("kernel_size", "padding", "dilation"), [(3, 1, 1), (3, 2, 2), (5, 4, 2)])
def test_residual_block_with_matching_shapes_adds_the_identity(kernel_size, padding, dilation):
    torch.manual_seed(0)
    block = ResidualBlock(4, 4, kernel_size=kernel_size, padding=padding, stride=1, dilation=dilation, batch_norm=False)
    assert isinstance(block.projection, nn.Identity)
    x = torch.randn(2, 4, 10, 10)
    torch.testing.assert_close(block(x), torch.relu(block.f(x) + x))
    for conv in (block.f[0], block.f[2]):  # F = 0 leaves h = ReLU(x)
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    torch.testing.assert_close(block(x), torch.relu(x))


@pytest.mark.parametrize(("c_in", "c_out", "stride"), [(4, 8, 1), (4, 4, 2), (3, 6, 2)])
def test_residual_block_projects_with_a_one_by_one_convolution_when_the_shape_changes(c_in, c_out, stride):
    torch.manual_seed(0)
    block = ResidualBlock(c_in, c_out, kernel_size=3, padding=1, stride=stride, dilation=1, batch_norm=False)
    (projection,) = block.projection
    assert isinstance(projection, nn.Conv2d)
    assert projection.kernel_size == (1, 1) and projection.stride == (stride, stride)
    x = torch.randn(2, c_in, 8, 8)
    side = conv_output_size(8, 3, 1, stride)
    expected = torch.relu(block.f(x) + nn.functional.conv2d(x, projection.weight, projection.bias, stride=stride))
    assert block(x).shape == (2, c_out, side, side)
    torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize("stride", [1, 2])
def test_inception_block_concatenates_its_four_branches_along_the_channels(stride):
    torch.manual_seed(0)
    block = InceptionBlock(3, 16, kernel_size=3, padding=1, stride=stride, dilation=1, batch_norm=False)
    x = torch.randn(2, 3, 8, 8)
    h = block(x)
    side = conv_output_size(8, 3, 1, stride)
    assert h.shape == (2, 16, side, side)
    one_by_one = block.branches[0][0]  # B_1: a 1 x 1 convolution is a matrix product over the channels at every pixel
    strided = x[:, :, ::stride, ::stride]
    expected = torch.einsum("oc,bchw->bohw", one_by_one.weight[:, :, 0, 0], strided) + one_by_one.bias[:, None, None]
    torch.testing.assert_close(h[:, :4], torch.relu(expected))
    pool_conv = block.branches[3][1]  # B_4: 3 x 3 max pooling (the padding never wins), then 1 x 1
    pooled = F.max_pool2d(F.pad(x, (1, 1, 1, 1), value=float("-inf")), 3, stride)
    torch.testing.assert_close(h[:, 12:], torch.relu(F.conv2d(pooled, pool_conv.weight, pool_conv.bias)))
    for index, branch in enumerate(block.branches):  # each branch fills its own quarter of the channels
        torch.testing.assert_close(h[:, 4 * index:4 * (index + 1)], branch(x))


@pytest.mark.parametrize(("dilation", "fields"), [(1, [1, 3, 5]), (2, [1, 5, 9])])
def test_inception_convolution_branches_see_growing_squares(dilation, fields):
    """1 x 1; k x k; two k x k (GoogLeNet's 5 x 5 for k = 3): d(k - 1) + 1 pixels more per dilated convolution.
    (Max pooling passes the gradient to one pixel per window: B_4 is checked against F.max_pool2d above.)"""
    torch.manual_seed(0)
    block = InceptionBlock(2, 8, kernel_size=3, padding=dilation, stride=1, dilation=dilation, batch_norm=False)
    for branch in block.branches:  # positive biases keep every ReLU open, so the gradient shows the whole field
        for conv in (m for m in branch if isinstance(m, nn.Conv2d)):
            nn.init.constant_(conv.bias, 10.0)
    assert [receptive_field(branch, 2) for branch in block.branches[:3]] == fields


VALID = {"channels": [4], "block": "plain", "units_per_block": 1, "kernel_size": 3, "padding": 1, "stride": 1,
         "dilation": 1, "pool": "max", "dropout": 0.0}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dropout": 1.0}, r"^dropout: must be in \[0, 1\), got 1.0$"),
        ({"kernel_size": 0}, r"^kernel_size: must be a positive integer, got 0$"),
        ({"stride": 0}, r"^stride: must be a positive integer, got 0$"),
        ({"dilation": 0}, r"^dilation: must be a positive integer, got 0$"),
        ({"units_per_block": 0}, r"^units_per_block: must be a positive integer, got 0$"),
        ({"padding": -1}, r"^padding: must be zero or positive, got -1$"),
        ({"channels": []}, r"^channels: must be a non-empty list of positive integers, got \[\]$"),
        ({"channels": [4, 0]}, r"^channels: must be a non-empty list of positive integers, got \[4, 0\]$"),
        ({"block": "residual", "padding": 0},
         r"^padding: residual blocks need an odd kernel_size and padding = dilation \* \(kernel_size // 2\), "
         r"got kernel_size 3, padding 0, dilation 1$"),
        ({"block": "residual", "kernel_size": 4, "padding": 2}, r"^padding: residual blocks need an odd kernel_size"),
        ({"block": "inception", "dilation": 2}, r"^padding: inception blocks need .* got kernel_size 3, padding 1, dilation 2$"),
        ({"block": "inception", "channels": [8, 6]},
         r"^channels: inception blocks split each block's channels over 4 branches, so they must be multiples of 4, got \[8, 6\]$"),
    ],
)
def test_check_config_rejects_bad_values_naming_the_key(change, message):
    ConvolutionalNetwork.check_config(VALID)
    with pytest.raises(ValueError, match=message):
        ConvolutionalNetwork.check_config({**VALID, **change})


def test_check_config_rejects_blocks_that_shrink_the_image_below_one_pixel():
    shrinking = {**VALID, "channels": [4, 4, 4], "padding": 0}
    ConvolutionalNetwork.check_config(shrinking)  # without the data it cannot know
    with pytest.raises(ValueError, match=r"^channels: 3 blocks of 1 units with kernel_size 3, padding 0, stride 1, "
                                         r"dilation 1 shrink the 8x8 input below one pixel \(\[6, 3, 1, -1\]\)$"):
        ConvolutionalNetwork.check_config(shrinking, DIGITS)
    dilated = {**VALID, "dilation": 4, "padding": 0}  # a 3 x 3 kernel spanning 9 pixels
    with pytest.raises(ValueError, match=r"^channels: 1 blocks of 1 units .* dilation 4 shrink the 8x8 input below one pixel \(\[0\]\)$"):
        ConvolutionalNetwork.check_config(dilated, DIGITS)
    ConvolutionalNetwork.check_config({**dilated, "padding": 1}, DIGITS)
    ConvolutionalNetwork.check_config(VALID, DIGITS)


@pytest.mark.parametrize("overrides", [
    {},
    {"block": "residual"},
    {"block": "inception"},
    {"units_per_block": 2, "dilation": 2, "padding": 2},
])
def test_network_overfits_a_small_batch(overrides):
    torch.manual_seed(0)
    x = torch.randn(16, 1, 8, 8)
    y = torch.randint(0, 3, (16,))
    network = make_network(DataSpec("multiclass", (1, 8, 8), 3), **{"channels": [8, 16], **overrides})
    fit_batch(network, x, y, steps=150)
    with torch.no_grad():
        assert network.loss(network(x), y).item() < 0.05
        assert torch.equal(network.predict(x).argmax(dim=-1), y)
