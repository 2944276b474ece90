"""The networks: one small conv-net family, described by a spec, so recipes can name and diff them.

Every network of the original study's ladder (nets A-D in docs/ladder.md) is a point in this family:
conv1 (stride 1 or 2) -> [pool] -> ReLU -> conv2 (stride 1 or 2) -> [pool] -> [ReLU] -> [dropout2d] -> flatten -> fc -> ReLU
-> [dropout] -> fc.

A module may define `init_from_data(images)`: model creation (engines.FreshWeights) calls it once per run,
inside the clock, right after the default init, with the run's first training images (normalised, on the
device). Ours uses it for a whitening
first layer; a user's network may use it for any data-dependent initialisation.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fastmnist.errors import FastMnistError


@dataclass(frozen=True)
class NetSpec:
    conv1: int = 32  # output channels of the first conv
    kernel1: int = 3
    stride1: int = 1  # 2 computes only the outputs a following 2x2 pool would keep (beyond the original study)
    conv2: int = 64
    kernel2: int = 3
    stride2: int = 1  # 2 with pool2 off: conv2 computes a quarter of the positions and no pool follows it
    pool1: bool = False  # 2x2 max-pool after conv1 (net B on)
    pool_before_relu: bool = False  # same function, less work (net D)
    relu2: bool = True  # net A has none after conv2: its forward goes conv2 -> max_pool2d -> dropout
    dropout1: float = 0.25  # Dropout2d after the conv block (net A only)
    fc: int = 128
    dropout2: float = 0.5  # before the last linear layer (nets A, B)
    batchnorm: bool = False  # BatchNorm after each conv (beyond the original study)
    whiten1: bool = False  # conv1 not learned: patch-whitening filters from the data, +/- pairs; no BN after it
    hwc_features: bool = False  # fc1 reads the pooled maps in (row, column, channel) order: channels_last's own
    inplace_relu: bool = False  # each ReLU overwrites its input, which nothing else reads: no new tensor
    space_to_depth: bool = False  # conv1 (stride 2) reads each 2x2 block of pixels as 4 channels: see `blocked`
    pool2: bool = True  # 2x2 max-pool after conv2

    def problems(self) -> list[str]:
        """Why this spec cannot be built, one line each (field bounds are checked where values are parsed)."""
        found = []
        if self.sides()[1] < (2 if self.pool2 else 1):
            found.append(f"conv2's output would be {self.sides()[1]} pixels wide, too small"
                         + (" for its 2x2 pool" if self.pool2 else ""))
        if self.whiten1 and self.conv1 % 2:
            found.append(f"whiten1 needs an even conv1 (filters come in +/- pairs), not {self.conv1}")
        if self.space_to_depth and self.stride1 != 2:
            found.append(f"space_to_depth needs stride1=2 (conv1 then steps over whole 2x2 blocks), not {self.stride1}")
        if self.whiten1 and self.conv1 // 2 > self.kernel1 ** 2:
            found.append(f"whiten1: conv1={self.conv1} asks for {self.conv1 // 2} whitening directions, and a "
                         f"{self.kernel1}x{self.kernel1} patch has {self.kernel1 ** 2}")
        return found

    def sides(self) -> tuple[int, int]:
        """Output side of conv1 and of conv2 (before their pools)."""
        side1 = (28 - self.kernel1) // self.stride1 + 1
        return side1, ((side1 // 2 if self.pool1 else side1) - self.kernel2) // self.stride2 + 1

    def feature_size(self) -> int:
        side2 = self.sides()[1]
        return self.conv2 * (side2 // 2 if self.pool2 else side2) ** 2

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> NetSpec:
        return cls(**json.loads(text))


NETS = {
    "A": NetSpec(relu2=False),
    "B": NetSpec(pool1=True, dropout1=0.0),
    "C": NetSpec(conv1=24, conv2=32, pool1=True, dropout1=0.0, dropout2=0.0),
    "D": NetSpec(conv1=24, kernel1=5, conv2=32, pool1=True, pool_before_relu=True, dropout1=0.0, fc=256,
                 dropout2=0.0),
}


def net_name(spec) -> str:
    """'A'..'D' for the original study's networks, a short description of other specs, and a user
    factory's own name."""
    if not isinstance(spec, NetSpec):
        from fastmnist.recipes.userfile import short_name

        return short_name(spec)
    for name, known in NETS.items():
        if known == spec:
            return name
    bn = "+BN" if spec.batchnorm else ""
    stride = f"s{spec.stride1}" if spec.stride1 != 1 else ""
    whiten = "w" if spec.whiten1 else ""
    blocks = "b" if spec.space_to_depth else ""
    stride2 = (f"s{spec.stride2}" if spec.stride2 != 1 else "") + ("" if spec.pool2 else "n")
    return f"{spec.conv1}k{spec.kernel1}{stride}{whiten}{blocks}/{spec.conv2}k{spec.kernel2}{stride2}/fc{spec.fc}{bn}"


INIT_IMAGES = 1000  # training images given to `init_from_data`: 144k patches for a 5x5, stride-2 whitening
WHITENING_EPS = 5e-4  # added to each eigenvalue: keeps the faintest directions from being blown up
RUN_CONSTANTS = {"INIT_IMAGES": "training images init_from_data sees (the run's first)",  # for `recipes --show`
                 "WHITENING_EPS": "added to each eigenvalue of the whitening"}


def whitening_filters(images: torch.Tensor, pairs: int, kernel: int, stride: int) -> torch.Tensor:
    """The `pairs` strongest eigenvectors of the patches' covariance, each scaled to unit output variance,
    then the same filters negated (airbench's `init_whitening_conv`): after a ReLU the pair keeps both signs.
    Patches span every input channel (MNIST's one, or a feature map's C: C*k*k dimensions). The
    eigen-decomposition (25x25 for one channel and 5x5) runs on the CPU in float64, whatever the device."""
    channels = images.shape[1]
    patches = F.unfold(images.float().contiguous(), kernel, stride=stride).transpose(1, 2).reshape(
        -1, channels * kernel ** 2)
    mean = patches.mean(0)
    covariance = (patches.T @ patches / len(patches) - torch.outer(mean, mean)).double().cpu()
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    strongest = eigenvectors[:, -pairs:].flip(1) / torch.sqrt(eigenvalues[-pairs:].flip(0) + WHITENING_EPS)
    filters = strongest.T.reshape(pairs, channels, kernel, kernel).float().to(images.device)
    return torch.cat([filters, -filters])


def blocked(images: torch.Tensor) -> torch.Tensor:
    """N x 1 x 28 x 28 images as N x 4 x 14 x 14 (channels_last): each 2x2 block of pixels one position, its
    four pixels four channels. A kernel-k, stride-2 conv over the image is then a kernel-ceil(k/2), stride-1
    conv over the blocks (`blocked_filters`), the same function; oneDNN runs a 1-channel bf16 conv on a slow
    path and the 4-channel one several times faster. Training and test images are prepared in this layout
    once, before the clock, as they are normalised (layout.prepare)."""
    return F.pixel_unshuffle(images, 2).contiguous(memory_format=torch.channels_last)


def blocked_filters(filters: torch.Tensor) -> torch.Tensor:
    """C x 1 x k x k stride-2 filters as the C x 4 x ceil(k/2) x ceil(k/2) filters `blocked` images need (an odd
    kernel gets a row and a column of zeros)."""
    k = filters.shape[-1]
    return F.pixel_unshuffle(F.pad(filters, (0, k % 2, 0, k % 2)), 2)


class ConvNet(nn.Module):
    def __init__(self, spec: NetSpec):
        super().__init__()
        self.spec = spec
        bias = not spec.batchnorm  # BatchNorm's shift makes a conv bias redundant
        if spec.space_to_depth:
            self.conv1 = nn.Conv2d(4, spec.conv1, (spec.kernel1 + 1) // 2, bias=bias and not spec.whiten1)
        else:
            self.conv1 = nn.Conv2d(1, spec.conv1, spec.kernel1, stride=spec.stride1, bias=bias and not spec.whiten1)
        if spec.whiten1:  # nothing before conv2 is learned, so autograd skips the first block's backward
            self.conv1.weight.requires_grad_(False)
        self.bn1 = nn.BatchNorm2d(spec.conv1) if spec.batchnorm and not spec.whiten1 else nn.Identity()
        self.conv2 = nn.Conv2d(spec.conv1, spec.conv2, spec.kernel2, stride=spec.stride2, bias=bias)
        self.bn2 = nn.BatchNorm2d(spec.conv2) if spec.batchnorm else nn.Identity()
        self.dropout1 = nn.Dropout2d(spec.dropout1) if spec.dropout1 else nn.Identity()
        self.fc1 = nn.Linear(spec.feature_size(), spec.fc)
        self.dropout2 = nn.Dropout(spec.dropout2) if spec.dropout2 else nn.Identity()
        self.fc2 = nn.Linear(spec.fc, 10)

    def init_from_data(self, images: torch.Tensor) -> None:
        """A whitened conv1 depends on the data, so it is computed per run, inside the clock: from the images'
        k x k patches, whichever layout they come in."""
        if self.spec.whiten1:
            with torch.no_grad():
                if images.shape[1] == 4:
                    images = F.pixel_shuffle(images.contiguous(), 2)
                filters = whitening_filters(images, self.spec.conv1 // 2, self.spec.kernel1, self.spec.stride1)
                self.conv1.weight.copy_(blocked_filters(filters) if self.spec.space_to_depth else filters)

    def activation(self, x):
        return F.relu(x, inplace=self.spec.inplace_relu)

    def block(self, x, conv, bn, pool, relu=True):
        x = conv(x)
        if pool and (self.spec.pool_before_relu or not relu):
            x = bn(F.max_pool2d(x, 2))
            return self.activation(x) if relu else x
        x = self.activation(bn(x))
        return F.max_pool2d(x, 2) if pool else x

    def features(self, x):
        """Flattened for fc1. Under channels_last, (row, column, channel) order is the maps' memory order, so
        this is a view, and the gradient coming back has the layout of the ReLU's output; (channel, row,
        column) order, the original's, copies the maps and hands the ReLU's backward mixed layouts (its
        slow path: 4% of stage 20's time under the profiler). Either order is the same family of networks."""
        return torch.flatten(x.permute(0, 2, 3, 1) if self.spec.hwc_features else x, 1)

    def forward(self, x):
        if self.spec.space_to_depth and x.shape[1] == 1:  # images not prepared as blocks (prediction, export)
            x = blocked(x)
        x = self.block(x, self.conv1, self.bn1, self.spec.pool1)
        x = self.block(x, self.conv2, self.bn2, self.spec.pool2, self.spec.relu2)
        x = self.dropout1(x)
        x = self.dropout2(self.activation(self.fc1(self.features(x))))
        return F.log_softmax(self.fc2(x), dim=1)


NetFactory = Callable[[], nn.Module]  # a user's network: called with no arguments, returns the module


def build_net(net: NetSpec | NetFactory) -> nn.Module:
    """The module a recipe's `net` describes: one of our family, or whatever the user's factory makes."""
    return ConvNet(net) if isinstance(net, NetSpec) else net()


def check_net(net: NetSpec | NetFactory) -> None:
    """Refuse, before any timed run, a factory that fails or makes something that cannot classify MNIST."""
    if isinstance(net, NetSpec):
        problems = net.problems()
        if problems:
            raise FastMnistError(f"network {net_name(net)}: {problems[0]}")
        return
    name = net_name(net)
    try:
        module = net()
    except Exception as exc:
        raise FastMnistError(f"network factory {name} raised {type(exc).__name__}: {exc}") from None
    if not isinstance(module, nn.Module):
        raise FastMnistError(f"network factory {name} returned a {type(module).__name__}, not a torch.nn.Module")
    try:
        with torch.no_grad():
            output = module.eval()(torch.zeros(2, 1, 28, 28))
    except Exception as exc:
        raise FastMnistError(f"network from {name} fails on a batch of 2 MNIST images (2 x 1 x 28 x 28): "
                             f"{type(exc).__name__}: {exc}") from None
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != (2, 10):
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise FastMnistError(f"network from {name} maps 2 images to {shape}, expected 2 x 10 (one score per digit)")


@functools.lru_cache(maxsize=None)
def flops_per_image(net: NetSpec | NetFactory) -> tuple[int, int]:
    """(training, inference) FLOPs per image, counted by PyTorch (torch.utils.flop_counter) on one real
    forward, and one forward and backward, of the module. Convolutions and matrix products are counted;
    element-wise work (ReLU, pooling, BatchNorm) is not. The input needs no gradient, so the first
    layer's input gradient is neither computed nor counted."""
    from torch.utils.flop_counter import FlopCounterMode

    module = build_net(net)
    with FlopCounterMode(display=False) as forward, torch.no_grad():
        module.eval()(torch.zeros(1, 1, 28, 28))
    with FlopCounterMode(display=False) as both:
        module.train()(torch.zeros(2, 1, 28, 28)).sum().backward()  # 2 images: BatchNorm needs a batch
    return both.get_total_flops() // 2, forward.get_total_flops()
