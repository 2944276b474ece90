"""One training run of a recipe: prepare the data (untimed), then create, train and test a model (timed).

Read top to bottom, `train_run` is the whole recipe: model, optimiser, schedule, epochs, evaluation.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import record_function
from torch.utils.data import DataLoader, Dataset

from fastmnist.data import MEAN, STD, Mnist
from fastmnist.errors import FastMnistError
from fastmnist.machine import cpu_threads, native_bf16, sync
from fastmnist.models import INIT_IMAGES, NetSpec, build_net
from fastmnist.recipes import Recipe

COLLAPSED_BELOW = 20.0  # % test accuracy: twice chance; a finished run below it has diverged, NaN or not
PREPARED_ORDER_SEED = 0  # stage 3 on: the training set is shuffled once, at preparation, then walked in order
WARMUP_BATCHES = 8  # a warm-up run trains on this many batches, then the last (partial) one, then tests


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
    train: tuple  # (images, labels) tensors, or a Dataset
    test: tuple
    seconds: float  # preparation time, reported beside the timed figure

    def first_train_images(self, n: int) -> torch.Tensor:
        """The first n training images as one normalised tensor: what `init_from_data` is given. Every run
        of a ConvNet asks, whitened or not, so the per-sample path normalises its arrays in one call rather
        than paying its per-sample work inside the clock for nothing."""
        if isinstance(self.train, TorchvisionStyleMnist):
            return normalise(self.train.images[:n].numpy(), self.device, channels_last=False)
        return self.train[0][:n]

    @property
    def test_size(self) -> int:
        return len(self.test) if isinstance(self.test, Dataset) else len(self.test[1])


def normalise(images: np.ndarray, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = torch.from_numpy(images).to(device).unsqueeze(1).float().div_(255).sub_(MEAN).div_(STD)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def prepare(mnist: Mnist, recipe: Recipe, device: torch.device) -> PreparedData:
    start = time.perf_counter()
    if recipe.data_path == "dataloader":
        train = TorchvisionStyleMnist(mnist.train_images, mnist.train_labels)
        test = TorchvisionStyleMnist(mnist.test_images, mnist.test_labels)
    else:
        order = torch.randperm(len(mnist.train_labels), generator=torch.Generator().manual_seed(PREPARED_ORDER_SEED))
        labels = torch.from_numpy(mnist.train_labels.astype(np.int64))[order]
        train = (normalise(mnist.train_images[order.numpy()], device, recipe.channels_last), labels.to(device))
        test = (normalise(mnist.test_images, device, recipe.channels_last),
                torch.from_numpy(mnist.test_labels.astype(np.int64)).to(device))
    sync(device)
    return PreparedData(device, train, test, time.perf_counter() - start)


def preparation_key(recipe: Recipe) -> tuple:
    """Recipes with the same key can share one prepared copy of the data."""
    return recipe.data_path, recipe.channels_last


@dataclass
class RunResult:
    recipe: str
    seed: int
    accuracy: float  # percent, on the full 10k test set
    seconds: float  # model creation + training + testing
    epochs: int
    epoch_accuracies: list[float]
    diverged: bool
    precision: str
    images_seen: int  # training images, summed over epochs
    test_images: int  # images in one test evaluation
    model: torch.nn.Module | None = field(default=None, repr=False)

    def record(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "model"}


def batches_per_epoch(n: int, recipe: Recipe) -> int:
    return n // recipe.batch_size if recipe.drop_last else math.ceil(n / recipe.batch_size)


def make_optimizer(recipe: Recipe, params):
    fused = {"fused": True} if recipe.fused_optimizer else {}
    if recipe.optimizer == "adadelta":
        if fused:
            raise FastMnistError("fused_optimizer: PyTorch has no fused Adadelta; use adam or sgd")
        return torch.optim.Adadelta(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, betas=(recipe.beta1, recipe.beta2),
                                weight_decay=recipe.weight_decay, **fused)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, nesterov=True,
                               weight_decay=recipe.weight_decay, **fused)
    raise FastMnistError(f"unknown optimizer {recipe.optimizer!r}")


def make_schedule(recipe: Recipe, optimizer, steps_per_epoch: int):
    """The scheduler, and whether it steps every batch (onecycle) rather than every epoch (step decay)."""
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, pct_start=recipe.pct_start,
                                                   total_steps=recipe.epochs * steps_per_epoch,
                                                   cycle_momentum=False), True
    if recipe.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=recipe.gamma), False
    raise FastMnistError(f"unknown schedule {recipe.schedule!r}")


def train_batches(data: PreparedData, recipe: Recipe, seed: int, warmup: bool):
    """An epoch's batches and their count. In-memory data is sliced in its fixed prepared order."""
    if recipe.data_path == "dataloader":
        cuda = data.device.type == "cuda"
        loader = DataLoader(data.train, batch_size=recipe.batch_size, shuffle=True, drop_last=recipe.drop_last,
                            generator=torch.Generator().manual_seed(seed),
                            num_workers=1 if cuda else 0, pin_memory=cuda)
        count = len(loader)

        def epoch():
            for i, (x, y) in enumerate(loader):
                if warmup and i == WARMUP_BATCHES:
                    break  # nothing here compiles per shape, so the partial last batch needs no warm-up
                yield x.to(data.device, non_blocking=True), y.to(data.device, non_blocking=True)
        return epoch, count
    images, labels = data.train
    n = int(len(labels) * recipe.train_fraction)
    count = batches_per_epoch(n, recipe)
    bs = recipe.batch_size
    indices = [*range(min(WARMUP_BATCHES, count - 1)), count - 1] if warmup else range(count)

    def epoch():
        for i in indices:
            yield images[i * bs: min((i + 1) * bs, n)], labels[i * bs: min((i + 1) * bs, n)]
    return epoch, count


def test_batches(data: PreparedData, recipe: Recipe):
    if recipe.data_path == "dataloader":
        loader = DataLoader(data.test, batch_size=recipe.test_batch_size, shuffle=False)
        return ((x.to(data.device), y.to(data.device)) for x, y in loader)
    images, labels = data.test
    bs = recipe.test_batch_size
    return ((images[i:i + bs], labels[i:i + bs]) for i in range(0, len(labels), bs))


@record_function("evaluation")
def test_accuracy(model, batches, autocast) -> tuple[float, bool]:
    """Percent correct, and whether every output was a number."""
    model.eval()
    correct = total = 0
    finite_outputs = torch.ones((), dtype=torch.bool)
    with torch.no_grad(), autocast():
        for x, y in batches:
            output = model(x)
            correct += (output.argmax(1) == y).sum()
            finite_outputs = finite_outputs & torch.isfinite(output).all().cpu()
            total += len(y)
    model.train()
    return 100.0 * int(correct) / total, bool(finite_outputs)


def effective_precision(recipe: Recipe, device: torch.device) -> str:
    """bf16 only where the hardware multiplies it natively; elsewhere fp32, recorded as such."""
    return "bf16" if recipe.precision == "bf16" and native_bf16(device) else "fp32"


def finite(model: torch.nn.Module) -> bool:
    """All weights are numbers: a run whose weights hold NaN/inf has diverged, whatever its loss said."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def train_run(recipe: Recipe, data: PreparedData, seed: int, warmup: bool = False, on_epoch=None) -> RunResult:
    """Model creation, training and the test evaluation(s): everything between the two clock readings.
    `on_epoch(epoch, accuracy, elapsed_seconds)` is told after each test evaluation (for progress lines)."""
    with cpu_threads(recipe.threads):
        return timed_run(recipe, data, seed, warmup, on_epoch)


def timed_run(recipe: Recipe, data: PreparedData, seed: int, warmup: bool, on_epoch) -> RunResult:
    device = data.device
    precision = effective_precision(recipe, device)
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")  # noqa: E731
    torch.manual_seed(seed)
    sync(device)
    start = time.perf_counter()

    model = build_net(recipe.net).to(device)
    if hasattr(model, "init_from_data"):  # data-dependent initialisation is part of creating the model
        model.init_from_data(data.first_train_images(INIT_IMAGES))
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if recipe.compile else model
    epoch_batches, steps_per_epoch = train_batches(data, recipe, seed, warmup)
    optimizer = make_optimizer(recipe, [p for p in model.parameters() if p.requires_grad])
    scheduler, per_batch = make_schedule(recipe, optimizer, steps_per_epoch)
    loss_sum = torch.zeros((), device=device)
    epoch_accuracies, images_seen, diverged = [], 0, False
    model.train()
    for epoch in range(1 if warmup else recipe.epochs):
        for x, y in epoch_batches():
            with record_function("forward"):  # labels for `benchmarks/profile_run.py`
                with autocast():
                    output = forward(x)
                if recipe.label_smoothing or not isinstance(recipe.net, NetSpec):  # a user's net may give logits
                    loss = F.cross_entropy(output.float(), y, label_smoothing=recipe.label_smoothing)
                else:
                    loss = F.nll_loss(output.float(), y)  # our nets end in log_softmax, as the original's
            with record_function("backward"):
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            with record_function("optimizer"):
                optimizer.step()
                if per_batch:
                    scheduler.step()
            loss_sum += loss.detach()
            images_seen += len(y)
        if not per_batch:
            scheduler.step()
        diverged = not (bool(torch.isfinite(loss_sum)) and finite(model))  # once an epoch: no per-step sync
        last_epoch = diverged or epoch == recipe.epochs - 1 or warmup
        if recipe.eval_every_epoch or last_epoch:
            accuracy, finite_outputs = test_accuracy(forward, test_batches(data, recipe), autocast)
            epoch_accuracies.append(accuracy)
            collapsed = last_epoch and not warmup and accuracy < COLLAPSED_BELOW
            diverged = diverged or not finite_outputs or collapsed
            if on_epoch:
                on_epoch(epoch + 1, epoch_accuracies[-1], time.perf_counter() - start)
            if diverged or (recipe.early_stop and epoch_accuracies[-1] >= recipe.target):
                break

    sync(device)
    seconds = time.perf_counter() - start
    return RunResult(recipe.name, seed, epoch_accuracies[-1], seconds, epoch + 1, epoch_accuracies, diverged,
                     precision, images_seen, data.test_size, model)
