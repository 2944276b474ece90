"""Networks outside fastmnist's own family, tried for issue #20 (fewer FLOPs to 99%) as users' recipes:
each is stage 18 with another network, so `fastmnist bench` runs them beside it, interleaved:

    fastmnist bench stage18 benchmarks/fewer_flops_levers.py:conv2_stride2 ... --runs 8

Every network keeps stage 18's whitened, frozen conv1 (its `init_from_data` computes the filters inside
the clock, as stage 18's does), BatchNorm after conv2's pooling, ReLU, fc, head. What changes is where
the work of conv2 goes:
- `conv2_stride2`: conv2 with stride 2 and 32 channels, no pool: a quarter of the positions.
- `pool_then_conv2`: a 2x2 max-pool on the whitened 12x12 maps, then a padded conv2 of 32 channels.
- `whiten_stride3_*`: conv1 with stride 3 (8x8 maps instead of 12x12), so conv2 sees fewer positions.
- `centre*`: only the middle 24x24 (or 22x22) pixels, where MNIST centres its 20x20 digits: fewer positions
  for both convolutions and fc1 (0.24% of the training ink lies outside the middle 24x24, 1.0% outside 22x22).
- `frozen_conv2_*`: conv2 not learned either: the patch-whitening of conv1's output (PCA, +/- pairs, as
  conv1), so nothing before BatchNorm needs a backward; only BatchNorm and the two linear layers learn.

And two changes of stage 20's own network that might buy accuracy to trade for images: `zero_head` (the
output layer starts at zero) and `frozen_bn_scale` (BatchNorm learns its shift only, as in airbench).

The figures in results/speed/levers-*.json were measured when stage 18 trained on 80% of the images in one
fixed order for every seed; stage 18 now trains on 90%, each seed in its own order (docs/statistics.md), and
these recipes follow it.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

import fastmnist
from fastmnist.training.nets import INIT_IMAGES, ConvNet, whitening_filters


class WhitenedNet(nn.Module):
    """Frozen whitening conv1 -> ReLU -> [pool] -> conv2 -> [pool] -> BatchNorm -> ReLU -> fc -> ReLU -> head."""

    def __init__(self, conv1=24, kernel1=5, stride1=2, pool1=False, conv2=16, stride2=1, pad2=0, pool2=True,
                 fc=128, frozen_conv2=False, crop=28):
        super().__init__()
        self.kernel1, self.stride1, self.pool1, self.pool2 = kernel1, stride1, pool1, pool2
        self.margin = (28 - crop) // 2
        self.conv1 = nn.Conv2d(1, conv1, kernel1, stride=stride1, bias=False)
        self.conv1.weight.requires_grad_(False)
        self.conv2 = nn.Conv2d(conv1, conv2, 3, stride=stride2, padding=pad2, bias=False)
        self.conv2.weight.requires_grad_(not frozen_conv2)
        self.frozen_conv2 = frozen_conv2
        side = (crop - kernel1) // stride1 + 1
        side = (side // 2 if pool1 else side) + 2 * pad2 - 3
        side = side // stride2 + 1
        side = side // 2 if pool2 else side
        self.bn2 = nn.BatchNorm2d(conv2)
        self.fc1, self.fc2 = nn.Linear(conv2 * side * side, fc), nn.Linear(fc, 10)

    def centre(self, x: torch.Tensor) -> torch.Tensor:
        """The middle crop x crop pixels (a view), where MNIST's digits are: their 20x20 box, centred by mass."""
        m = self.margin
        return x[:, :, m:x.shape[2] - m, m:x.shape[3] - m] if m else x

    def init_from_data(self, images: torch.Tensor) -> None:
        images = self.centre(images)
        with torch.no_grad():
            self.conv1.weight.copy_(whitening_filters(images, len(self.conv1.weight) // 2, self.kernel1,
                                                      self.stride1))
            if self.frozen_conv2:  # from half the images: 500 x 100 positions are ample for 216 dimensions
                maps = F.relu(F.conv2d(images[:INIT_IMAGES // 2], self.conv1.weight, stride=self.stride1))
                self.conv2.weight.copy_(whitening_filters(maps, len(self.conv2.weight) // 2, 3, 1))

    def forward(self, x):
        x = F.relu(self.conv1(self.centre(x)))
        x = F.max_pool2d(x, 2) if self.pool1 else x
        x = self.conv2(x)
        x = F.max_pool2d(x, 2) if self.pool2 else x
        x = F.relu(self.bn2(x))
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def network(name: str, **shape):
    """A named factory (so saved models and reports can refer to it) for one WhitenedNet shape."""
    factory = functools.partial(WhitenedNet, **shape)
    factory.__module__, factory.__qualname__ = __name__, name
    globals()[name] = factory
    return factory


STAGE18 = fastmnist.recipe("stage18")
conv2_stride2 = fastmnist.derive(STAGE18, "conv2_stride2", "conv2 stride 2, 32 channels, no pool",
                                 net=network("net_conv2_stride2", conv2=32, stride2=2, pool2=False))
pool_then_conv2 = fastmnist.derive(STAGE18, "pool_then_conv2", "pool the 12x12 maps, then a padded conv2 of 32",
                                   net=network("net_pool_then_conv2", pool1=True, conv2=32, pad2=1))
whiten_stride3_6x6 = fastmnist.derive(STAGE18, "whiten_stride3_6x6", "6x6 whitening at stride 3, conv2 32",
                                      net=network("net_whiten_stride3_6x6", kernel1=6, stride1=3, conv2=32))
whiten_stride3_wide = fastmnist.derive(STAGE18, "whiten_stride3_wide", "6x6 whitening at stride 3 (16 directions), "
                                       "conv2 48", net=network("net_whiten_stride3_wide", conv1=32, kernel1=6,
                                                               stride1=3, conv2=48))
frozen_conv2_32 = fastmnist.derive(STAGE18, "frozen_conv2_32", "conv2 frozen too: 32 PCA filters of conv1's maps",
                                   net=network("net_frozen_conv2_32", conv2=32, frozen_conv2=True))
centre24 = fastmnist.derive(STAGE18, "centre24", "only the middle 24x24 pixels: 10x10 whitened maps, 4x4 pooled",
                            net=network("net_centre24", crop=24))
centre24_conv2_24 = fastmnist.derive(STAGE18, "centre24_conv2_24", "the middle 24x24, conv2 24 channels",
                                     net=network("net_centre24_conv2_24", crop=24, conv2=24))
centre22 = fastmnist.derive(STAGE18, "centre22", "only the middle 22x22 pixels", net=network("net_centre22", crop=22))
frozen_conv2_64 = fastmnist.derive(STAGE18, "frozen_conv2_64", "conv2 frozen too: 64 PCA filters, all images",
                                   net=network("net_frozen_conv2_64", conv2=64, frozen_conv2=True),
                                   train_fraction=1.0)


STAGE20 = fastmnist.recipe("stage20")


def net_zero_head() -> nn.Module:
    net = ConvNet(STAGE20.net)
    nn.init.zeros_(net.fc2.weight)
    nn.init.zeros_(net.fc2.bias)
    return net


def net_frozen_bn_scale() -> nn.Module:
    net = ConvNet(STAGE20.net)
    net.bn2.weight.requires_grad_(False)
    return net


zero_head = fastmnist.derive(STAGE20, "zero_head", "stage 20, output layer initialised at zero", net=net_zero_head)
zero_head_70 = fastmnist.derive(zero_head, "zero_head_70", "the same on 70% of the images", train_fraction=0.7)
frozen_bn_scale = fastmnist.derive(STAGE20, "frozen_bn_scale", "stage 20, BatchNorm's scale fixed at 1",
                                   net=net_frozen_bn_scale)
