"""Test-time views, as airbench's translations: the test pass sees each image and copies of it shifted by a
pixel, and predicts the argmax of their averaged softmax. A view is one more forward pass over the test set,
inside the clock; it buys accuracy without a longer training run (benchmarks/test_views.py measures each set).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

# (dx, dy) shifts in pixels, right and down: the sets `test_views` names
TEST_VIEWS = {"plain": ((0, 0),), "x3": ((0, 0), (1, 0), (-1, 0)), "y3": ((0, 0), (0, 1), (0, -1)),
              "diagonal3": ((0, 0), (1, 1), (-1, -1)), "xy4": ((1, 0), (-1, 0), (0, 1), (0, -1)),
              "xy5": ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))}


def rolled(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """N x 1 x 28 x 28 images (or the same as 2x2 blocks, N x 4 x 14 x 14: nets.blocked) rolled by (dx, dy)
    pixels. MNIST's border is background, so the roll brings in background."""
    blocks = images.shape[1] == 4
    pixels = F.pixel_shuffle(images, 2) if blocks else images
    moved = torch.roll(pixels, shifts=(dy, dx), dims=(2, 3))
    return F.pixel_unshuffle(moved, 2) if blocks else moved


@functools.lru_cache(maxsize=None)
def source_positions(shape: tuple[int, int, int], dx: int, dy: int, device: torch.device) -> torch.Tensor:
    """For each value of a rolled image in (row, column, channel) memory order, where it comes from: a roll is a
    fixed permutation of an image's values, found once by rolling an image of positions."""
    channels, height, width = shape
    positions = torch.arange(height * width * channels).view(1, height, width, channels).permute(0, 3, 1, 2)
    return rolled(positions, dx, dy).permute(0, 2, 3, 1).flatten().to(device)


def shifted(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """`rolled`'s values as one gather over each image's values (several times faster than rolling 2x2 blocks),
    channels_last."""
    if dx == dy == 0:
        return images
    n, channels, height, width = images.shape
    values = images.permute(0, 2, 3, 1).reshape(n, -1)  # a view where the images are channels_last
    order = source_positions((channels, height, width), dx, dy, images.device)
    return values.index_select(1, order).view(n, height, width, channels).permute(0, 3, 1, 2)


def view_probabilities(forward, images: torch.Tensor, views: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """The softmax of `forward` (log-probabilities or logits), averaged over the views of `images`: N x 10, fp32."""
    return sum(forward(shifted(images, dx, dy)).float().softmax(1) for dx, dy in views) / len(views)
