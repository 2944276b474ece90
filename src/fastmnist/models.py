"""The networks: one small conv-net family, described by a spec, so recipes can name and diff them.

Every network of the original study's ladder (nets A-D in docs/ladder.md) is a point in this family:
conv1 (stride 1 or 2) -> [pool] -> ReLU -> conv2 -> pool -> [ReLU] -> [dropout2d] -> flatten -> fc -> ReLU
-> [dropout] -> fc.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class NetSpec:
    conv1: int = 32  # output channels of the first conv
    kernel1: int = 3
    stride1: int = 1  # 2 computes only the outputs a following 2x2 pool would keep (beyond the seed)
    conv2: int = 64
    kernel2: int = 3
    pool1: bool = False  # 2x2 max-pool after conv1 (net B on)
    pool_before_relu: bool = False  # same function, less work (net D)
    relu2: bool = True  # net A has none after conv2: its forward goes conv2 -> max_pool2d -> dropout
    dropout1: float = 0.25  # Dropout2d after the conv block (net A only)
    fc: int = 128
    dropout2: float = 0.5  # before the last linear layer (nets A, B)
    batchnorm: bool = False  # BatchNorm after each conv (beyond the seed)

    def sides(self) -> tuple[int, int]:
        """Output side of conv1 and of conv2 (before their pools)."""
        side1 = (28 - self.kernel1) // self.stride1 + 1
        return side1, (side1 // 2 if self.pool1 else side1) - self.kernel2 + 1

    def feature_size(self) -> int:
        return self.conv2 * (self.sides()[1] // 2) ** 2

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


def net_name(spec: NetSpec) -> str:
    """'A'..'D' for the original study's networks, else a short description of the spec."""
    for name, known in NETS.items():
        if known == spec:
            return name
    bn = "+BN" if spec.batchnorm else ""
    stride = f"s{spec.stride1}" if spec.stride1 != 1 else ""
    return f"{spec.conv1}k{spec.kernel1}{stride}/{spec.conv2}k{spec.kernel2}/fc{spec.fc}{bn}"


class ConvNet(nn.Module):
    def __init__(self, spec: NetSpec):
        super().__init__()
        self.spec = spec
        bias = not spec.batchnorm  # BatchNorm's shift makes a conv bias redundant
        self.conv1 = nn.Conv2d(1, spec.conv1, spec.kernel1, stride=spec.stride1, bias=bias)
        self.bn1 = nn.BatchNorm2d(spec.conv1) if spec.batchnorm else nn.Identity()
        self.conv2 = nn.Conv2d(spec.conv1, spec.conv2, spec.kernel2, bias=bias)
        self.bn2 = nn.BatchNorm2d(spec.conv2) if spec.batchnorm else nn.Identity()
        self.dropout1 = nn.Dropout2d(spec.dropout1) if spec.dropout1 else nn.Identity()
        self.fc1 = nn.Linear(spec.feature_size(), spec.fc)
        self.dropout2 = nn.Dropout(spec.dropout2) if spec.dropout2 else nn.Identity()
        self.fc2 = nn.Linear(spec.fc, 10)

    def block(self, x, conv, bn, pool, relu=True):
        x = conv(x)
        if pool and (self.spec.pool_before_relu or not relu):
            x = bn(F.max_pool2d(x, 2))
            return F.relu(x) if relu else x
        x = F.relu(bn(x))
        return F.max_pool2d(x, 2) if pool else x

    def forward(self, x):
        x = self.block(x, self.conv1, self.bn1, self.spec.pool1)
        x = self.block(x, self.conv2, self.bn2, True, self.spec.relu2)
        x = self.dropout1(x)
        x = self.dropout2(F.relu(self.fc1(torch.flatten(x, 1))))
        return F.log_softmax(self.fc2(x), dim=1)


def layer_macs(spec: NetSpec) -> dict[str, int]:
    """Multiply-accumulates per image of each conv and linear layer (forward pass)."""
    side1, side2 = spec.sides()
    return {
        "conv1": side1 * side1 * spec.conv1 * spec.kernel1 ** 2,
        "conv2": side2 * side2 * spec.conv2 * spec.conv1 * spec.kernel2 ** 2,
        "fc1": spec.feature_size() * spec.fc,
        "fc2": spec.fc * 10,
    }


def flops_per_image(spec: NetSpec) -> tuple[int, int]:
    """(training, inference) FLOPs per image: backward costs twice the forward, except conv1's input
    gradient, which nobody needs."""
    macs = layer_macs(spec)
    forward = 2 * sum(macs.values())
    return 3 * forward - 2 * macs["conv1"], forward


def parameter_count(spec: NetSpec) -> int:
    return sum(p.numel() for p in ConvNet(spec).parameters())
