"""How the data is laid out for a run: per-sample datasets (stages 0-2) or whole normalised tensors on the
device (stage 3 on), each run's training order, and how an epoch is cut into batches. The order is drawn
before the clock starts, on both paths; per sample, the DataLoader's per-image work stays in the clock, as
it was the original's cost.

A seed is a whole try: it decides the initial weights and the order of the training images, so the subset
too where a recipe trains on part of them. In memory, the normalised set is kept in file order and each run
writes its own order into one buffer of the same size (`lay_out`), whose address never changes: batches
are views into it, and a captured CUDA graph reads the new order on its next replay.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from fastmnist.data import MEAN, Mnist, STD
from fastmnist.training.device import sync
from fastmnist.recipes.recipe import Recipe
from fastmnist.training.nets import blocked
from fastmnist.training.step import effective_precision

FIXED_ORDER_SEED = 0  # data_order=fixed: the one shuffle every run walks (the original's single draw, as we drew it)
ORDER_STREAM = 1  # the order's random stream, apart from the weights' (torch's global RNG) for the same seed
WARMUP_BATCHES = 8  # a warm-up run trains on this many batches, then the last (partial) one, then tests
RUN_CONSTANTS = {"FIXED_ORDER_SEED": "the one order of data_order=fixed",  # for `recipes --show`
                 "ORDER_STREAM": "the data order's random stream, apart from the weights'",
                 "WARMUP_BATCHES": "batches of the untimed warm-up run, then the last"}


class TorchvisionStyleMnist(Dataset):
    """Stages 0-2 read MNIST as the original did, through torchvision's `datasets.MNIST` with
    `Compose([ToTensor(), Normalize((0.1307,), (0.3081,))])`, and this does the same work per sample, step
    for step, without depending on torchvision: a PIL image from the uint8 array, ToTensor's copy to a
    uint8 tensor, its HWC -> CHW permute and float division, then Normalize's out-of-place sub and div
    with the mean and std as tensors. That per-sample cost is what stage 3 removes, so it must be paid."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        from PIL import Image

        image, target = self.images[index], int(self.labels[index])
        picture = Image.fromarray(image.numpy(), mode="L")  # datasets.MNIST.__getitem__
        tensor = torch.from_numpy(np.array(picture, np.uint8, copy=True))  # ToTensor (torchvision 0.9)
        tensor = tensor.view(picture.size[1], picture.size[0], len(picture.getbands()))
        tensor = tensor.permute((2, 0, 1)).contiguous().to(dtype=torch.get_default_dtype()).div(255)
        mean = torch.as_tensor((MEAN,), dtype=tensor.dtype).view(-1, 1, 1)  # Normalize
        std = torch.as_tensor((STD,), dtype=tensor.dtype).view(-1, 1, 1)
        return tensor.clone().sub_(mean).div_(std), target


@dataclass
class PreparedData:
    """What a run needs, already in place: whole tensors on the device, or per-sample datasets."""
    device: torch.device
    train: tuple  # (images, labels) tensors in the current run's order (see `lay_out`), or a Dataset
    test: tuple
    seconds: float  # preparation time, reported beside the timed figure
    file_order: tuple | None = None  # in memory: (images, labels) in the files' order, what each order draws from

    epoch_orders: list[np.ndarray] = field(default_factory=list)  # per-sample: the run's epochs, next first
    written: tuple = ()  # which order is in place (`order_key`): engines check it before a run starts

    def lay_out(self, recipe: Recipe, seed: int) -> tuple[str, float]:
        """Put this run's training order in place, before the clock: in memory, written into the training
        buffers; per sample, every epoch's order drawn for the DataLoader's sampler (the first epoch walks
        the seed's order, later epochs reshuffle the same subset, each on the order's stream). Returns the
        order's fingerprint (of the images the first epoch walks, in order) and the seconds it took."""
        start = time.perf_counter()
        self.written = ()
        n = self.train_size
        order = training_order(recipe, seed, n)
        subset = order[:int(n * recipe.train_fraction)]
        if self.file_order is None:
            self.epoch_orders = [subset] + [reshuffled(subset, recipe, seed, epoch) for epoch in range(1, recipe.epochs)]
        else:
            index = torch.from_numpy(order).to(self.device)
            for source, target in zip(self.file_order, self.train):
                torch.index_select(source, 0, index, out=target)
            sync(self.device)
        self.written = order_key(recipe, seed)
        return fingerprint(subset), time.perf_counter() - start

    def holds_order(self, recipe: Recipe, seed: int) -> bool:
        """Whether the order in place is the one `lay_out(recipe, seed)` writes."""
        return self.written == order_key(recipe, seed)

    def next_epoch_order(self) -> np.ndarray:
        """The per-sample path's next epoch (the DataLoader's sampler asks once an epoch)."""
        return self.epoch_orders.pop(0)

    def first_train_images(self, n: int) -> torch.Tensor:
        """The run's first n training images as one normalised tensor, in the layout the network reads (28 x 28,
        or 2x2 blocks): what `init_from_data` is given. Every
        run of a ConvNet asks, whitened or not, so the per-sample path normalises its arrays in one call
        rather than paying its per-sample work inside the clock for nothing."""
        if isinstance(self.train, TorchvisionStyleMnist):
            first = self.epoch_orders[0][:n] if self.epoch_orders else slice(0, n)
            return normalise(self.train.images[first].numpy(), self.device, channels_last=False)
        return self.train[0][:n]

    @property
    def train_size(self) -> int:
        return len(self.train) if isinstance(self.train, Dataset) else len(self.train[1])

    @property
    def test_size(self) -> int:
        return len(self.test) if isinstance(self.test, Dataset) else len(self.test[1])


class PlannedOrder(Sampler):
    """The DataLoader's sampler on the per-sample path: each epoch walks the order `lay_out` drew for it
    before the clock (the seed's order and subset), so no shuffle runs inside the timed run."""

    def __init__(self, data: PreparedData, recipe: Recipe):
        self.data, self.size = data, int(data.train_size * recipe.train_fraction)

    def __iter__(self):
        return iter(self.data.next_epoch_order().tolist())

    def __len__(self) -> int:
        return self.size


def reshuffled(subset: np.ndarray, recipe: Recipe, seed: int, epoch: int) -> np.ndarray:
    """Epoch `epoch`'s walk of the run's subset on the per-sample path (the DataLoader reshuffles each epoch),
    drawn on the order's stream: one draw per (seed, epoch), or per epoch alone for data_order=fixed."""
    root = FIXED_ORDER_SEED if recipe.data_order == "fixed" else seed
    return np.random.default_rng(np.random.SeedSequence(root, spawn_key=(ORDER_STREAM, epoch))).permutation(subset)


def normalise(images: np.ndarray, device: torch.device | str = "cpu", channels_last: bool = False) -> torch.Tensor:
    """uint8 (N, 28, 28) images as every network here sees them: N x 1 x 28 x 28, pixel/255, then
    (x - MEAN) / STD. Training, evaluation, prediction and export all use this one definition."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).unsqueeze(1).float().div_(255).sub_(MEAN).div_(STD)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def prepare(mnist: Mnist, recipe: Recipe, device: torch.device) -> PreparedData:
    start = time.perf_counter()
    if recipe.data_path == "dataloader":
        train = TorchvisionStyleMnist(mnist.train_images, mnist.train_labels)
        test = TorchvisionStyleMnist(mnist.test_images, mnist.test_labels)
        file_order = None
    else:
        file_order = (network_input(normalise(mnist.train_images, device, recipe.channels_last), recipe),
                      torch.from_numpy(mnist.train_labels.astype(np.int64)).to(device))
        train = tuple(torch.empty_like(t) for t in file_order)  # each run's order is written here
        test = (network_input(normalise(mnist.test_images, device, recipe.channels_last), recipe),
                torch.from_numpy(mnist.test_labels.astype(np.int64)).to(device))
    sync(device)
    data = PreparedData(device, train, test, time.perf_counter() - start, file_order)
    if file_order is not None:
        data.lay_out(recipe, 0)  # never an unwritten buffer: seed 0's order until a run writes its own
    return data


def reads_blocks(recipe: Recipe) -> bool:
    """Whether the recipe's network reads images as 2x2 blocks (nets.blocked)."""
    return getattr(recipe.net, "space_to_depth", False)


def image_dtype(recipe: Recipe, device: torch.device) -> torch.dtype:
    """bf16 where the recipe asks for bf16 images and its step runs in bf16 there: autocast would cast every
    batch to bf16 before conv1 anyway, so the cast moves into preparation and each batch reads half the bytes."""
    return torch.bfloat16 if recipe.bf16_images and effective_precision(recipe, device) == "bf16" else torch.float32


def network_input(images: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """Normalised images as the recipe's network reads them: in its layout (as they are, or as 2x2 blocks)
    and its dtype."""
    return (blocked(images) if reads_blocks(recipe) else images).to(image_dtype(recipe, images.device))


def training_order(recipe: Recipe, seed: int, n: int) -> np.ndarray:
    """The order a run walks the n training images in (its first `train_fraction` are its subset): drawn from
    the seed, on a stream of its own; or, for data_order=fixed, the same shuffle for every seed."""
    if recipe.data_order == "fixed":
        return torch.randperm(n, generator=torch.Generator().manual_seed(FIXED_ORDER_SEED)).numpy()
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(ORDER_STREAM,))).permutation(n)


def order_key(recipe: Recipe, seed: int) -> tuple:
    """What decides the order `lay_out` writes (and, per sample, each epoch's reshuffle of its subset)."""
    return recipe.data_order, recipe.train_fraction, recipe.epochs, seed


def fingerprint(indices: np.ndarray) -> str:
    """12 hex digits naming an order: two runs share it only if they walk the same images in the same order."""
    return hashlib.sha256(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()[:12]


def preparation_key(recipe: Recipe, device: torch.device) -> tuple:
    """Recipes with the same key can share one prepared copy of the data."""
    return recipe.data_path, recipe.channels_last, reads_blocks(recipe), image_dtype(recipe, device)


def batches_per_epoch(n: int, recipe: Recipe) -> int:
    return n // recipe.batch_size if recipe.drop_last else math.ceil(n / recipe.batch_size)


def epoch_images(data: PreparedData, recipe: Recipe) -> int:
    """Training images one epoch walks: the recipe's share of the prepared set."""
    return int(data.train_size * recipe.train_fraction)


def memory_batches(data: PreparedData, recipe: Recipe, warmup: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """An epoch of in-memory data as batches: views into the prepared tensors, in their fixed order (so a
    captured epoch reads the same addresses every replay). A warm-up takes the first few and the last."""
    images, labels = data.train
    n, bs = epoch_images(data, recipe), recipe.batch_size
    count = batches_per_epoch(n, recipe)
    indices = [*range(min(WARMUP_BATCHES, count - 1)), count - 1] if warmup else range(count)
    return [(images[i * bs: min((i + 1) * bs, n)], labels[i * bs: min((i + 1) * bs, n)]) for i in indices]


def train_batches(data: PreparedData, recipe: Recipe, warmup: bool):
    """An epoch's batches (a function that yields them) and the full epoch's batch count."""
    if recipe.data_path == "dataloader":
        cuda = data.device.type == "cuda"
        loader = DataLoader(data.train, batch_size=recipe.batch_size, sampler=PlannedOrder(data, recipe),
                            drop_last=recipe.drop_last, num_workers=1 if cuda else 0, pin_memory=cuda)

        def epoch():
            for i, (x, y) in enumerate(loader):
                if warmup and i == WARMUP_BATCHES:
                    break  # nothing here compiles per shape, so the partial last batch needs no warm-up
                yield x.to(data.device, non_blocking=True), y.to(data.device, non_blocking=True)
        return epoch, len(loader)
    batches = memory_batches(data, recipe, warmup)
    return (lambda: iter(batches)), batches_per_epoch(epoch_images(data, recipe), recipe)


def test_batches(data: PreparedData, recipe: Recipe):
    if recipe.data_path == "dataloader":
        loader = DataLoader(data.test, batch_size=recipe.test_batch_size, shuffle=False)
        return ((x.to(data.device), y.to(data.device)) for x, y in loader)
    images, labels = data.test
    bs = recipe.test_batch_size
    return ((images[i:i + bs], labels[i:i + bs]) for i in range(0, len(labels), bs))
