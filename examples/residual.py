"""Your own network in the harness: stage 14 with a residual second convolution.

    fastmnist bench stage14 examples/residual.py:residual --runs 25

conv2 keeps the 12 x 12 map (padding 1) and adds conv1's output back before the ReLU, so the two layers
learn a correction rather than a whole new map; the head then pools to 6 x 6 x 16 as stage 14 pools to
5 x 5 x 16. Everything else is stage 14's recipe (Adam, one cycle, batch 512, one epoch).
"""

import torch.nn.functional as F
from torch import nn

import fastmnist


class ResidualNet(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 5, stride=2, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.conv = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(width * 6 * 6, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x):
        x = self.stem(x)  # 12 x 12
        x = F.relu(x + self.conv(x))
        return self.head(F.max_pool2d(x, 2))  # logits; fastmnist trains user networks with cross-entropy


def make_residual() -> nn.Module:
    return ResidualNet()


residual = fastmnist.derive(fastmnist.recipe("stage14"), "residual", "stage 14 with a residual conv2",
                            net=make_residual)
