"""How much one epoch of stages 0-2's data path costs, without any training: the work stage 3 removes.

Iterates DataLoader(batch 64, shuffle) over the 60k training images three ways, interleaved A B C A B C:
  torchvision-style  the project's TorchvisionStyleMnist: PIL image, ToTensor, Normalize per sample
  numpy-style        the cheaper per-sample path the project used before (tensor ops only)
  emulated-0.9       torchvision 0.9's steps written out inline here, as an independent reference
and writes the median seconds per epoch of each with the machine and provenance.

    python benchmarks/dataloader_epoch.py --repeats 3 --out results/dataloader-epoch.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
from common import finish
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from fastmnist.data import MEAN, STD, load_mnist
from fastmnist.machine import machine_info
from fastmnist.records import envelope
from fastmnist.layout import TorchvisionStyleMnist


class NumpyStyle(Dataset):
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = torch.from_numpy(self.images[i]).to(torch.float32).div_(255).unsqueeze_(0)
        return x.sub_(MEAN).div_(STD), int(self.labels[i])


class Emulated09(Dataset):
    """torchvision 0.9: MNIST.__getitem__ -> Image.fromarray(mode L) -> ToTensor -> Normalize."""

    def __init__(self, images, labels):
        self.data, self.targets = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        img, target = Image.fromarray(self.data[i].numpy(), mode="L"), int(self.targets[i])
        pixels = np.array(img, np.uint8, copy=True)
        t = torch.from_numpy(pixels).view(28, 28, 1).permute((2, 0, 1)).contiguous().float().div(255)
        mean, std = torch.as_tensor((MEAN,)).view(-1, 1, 1), torch.as_tensor((STD,)).view(-1, 1, 1)
        return t.clone().sub_(mean).div_(std), target


def epoch_seconds(dataset) -> float:
    loader = DataLoader(dataset, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    for _x, _y in loader:
        pass
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    mnist = load_mnist()
    paths = {"torchvision-style": TorchvisionStyleMnist, "numpy-style": NumpyStyle, "emulated-0.9": Emulated09}
    datasets = {name: cls(mnist.train_images, mnist.train_labels) for name, cls in paths.items()}
    a, b = datasets["torchvision-style"][7], datasets["emulated-0.9"][7]
    assert torch.equal(a[0], b[0]) and a[1] == b[1], "the two torchvision paths must give identical tensors"
    seconds = {name: [] for name in datasets}
    for _ in range(args.repeats):
        for name, dataset in datasets.items():
            seconds[name].append(epoch_seconds(dataset))
    report = {**envelope("dataloader-epoch", machine_info(torch.device("cpu")), []),
              "what": "seconds per 60k-image epoch through DataLoader(batch 64, shuffle), no training",
              "seconds": seconds, "median": {k: statistics.median(v) for k, v in seconds.items()}}
    for name, values in seconds.items():
        print(f"{name:<18} median {statistics.median(values):.2f} s/epoch  ({', '.join(f'{v:.2f}' for v in values)})")
    return finish(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
