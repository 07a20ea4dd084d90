"""MNIST, decoded once into normalised tensors that live on the training device.

torchvision's `MNIST` class finds (or downloads) and parses the IDX files; after
that, every epoch is a `randperm` on the device and tensor indexing: no DataLoader
workers, no PIL image per sample per epoch.
"""
import copy
import gzip
import io
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torchvision.datasets import MNIST
from torchvision.utils import make_grid, save_image

from checkpointing import atomic_write
from errors import UserError

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
CLASSES = tuple(str(digit) for digit in range(10))
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
REPO_DIR = Path(__file__).resolve().parent
DEFAULT_SHOW_PATH = REPO_DIR / "outputs" / "visual" / "train_batch.png"


class DatasetError(UserError):
    """MNIST could not be found, downloaded or read; the message says where and what."""


def dataset_error(dataset_dir, reason):
    return DatasetError(
        f"MNIST could not be loaded from {os.path.abspath(dataset_dir)}: {reason}. "
        f"Expected the four IDX files {', '.join(IDX_FILES)} (plain or .gz) in that folder "
        f"or in its MNIST/raw/ subfolder; without them they are downloaded, which needs a network.")


class TensorLoader:
    """Yields `(images, labels)` batches of tensors already on the device.

    With `shuffle`, every pass takes a fresh `randperm` from `generator` (on the data's
    device), so the order is reproducible from the seed. Under distributed training each
    of `world_size` processes makes one: a shuffled loader gives its `rank` every
    `world_size`-th item of the same permutation, in batches of `batch_size // world_size`,
    so that the ranks' batches together are the single-process batches; an unshuffled
    one (the test split) gives each rank one contiguous part.
    """

    def __init__(self, images, labels, batch_size, shuffle=False, generator=None, rank=0, world_size=1):
        self.images = images
        self.labels = labels
        self.shuffle = shuffle
        self.generator = generator
        self.rank = rank
        self.world_size = world_size
        total = labels.size(0)
        if shuffle:
            # The last total % world_size items of each permutation are left out, so that
            # every rank takes the same number of steps.
            self.batch_size = batch_size // world_size
            self.num_samples = total // world_size
        else:
            self.batch_size = batch_size
            part = torch.arange(total).tensor_split(world_size)[rank]
            self.first = int(part[0]) if part.numel() else 0
            self.num_samples = part.numel()

    def __len__(self):
        return math.ceil(self.num_samples / self.batch_size)

    def to(self, device):
        """This loader with its tensors on `device`; a shuffling generator not yet drawn from
        is made anew there with the same seed (a generator lives on one device)."""
        device = torch.device(device)
        if self.labels.device == device:
            return self
        moved = copy.copy(self)
        moved.images, moved.labels = self.images.to(device), self.labels.to(device)
        if self.generator is not None:
            moved.generator = torch.Generator(device=device)
            moved.generator.manual_seed(self.generator.initial_seed())
        return moved

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.labels.size(0), device=self.labels.device, generator=self.generator)
            mine = order[self.rank:self.num_samples * self.world_size:self.world_size]
            for start in range(0, self.num_samples, self.batch_size):
                index = mine[start:start + self.batch_size]
                yield self.images[index], self.labels[index]
        else:
            for start in range(self.first, self.first + self.num_samples, self.batch_size):
                stop = min(start + self.batch_size, self.first + self.num_samples)
                yield self.images[start:stop], self.labels[start:stop]


def normalize(images_uint8, device):
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), computed as ToTensor() then Normalize()."""
    images = images_uint8.to(device).unsqueeze(1).to(torch.float32).div(255)
    mean = torch.tensor(MNIST_MEAN, dtype=torch.float32, device=device)
    std = torch.tensor(MNIST_STD, dtype=torch.float32, device=device)
    return images.sub_(mean).div_(std)


def _flat_layout_root(dataset_dir, workdir):
    """Give a folder holding the four files directly the MNIST/raw/ layout torchvision reads.

    Returns a root for `MNIST(root)`, or None when `dataset_dir` does not hold them all.
    Plain files are linked, gzipped ones decompressed, into `workdir`.
    """
    sources = {}
    for name in IDX_FILES:
        for candidate in (Path(dataset_dir) / name, Path(dataset_dir) / f"{name}.gz"):
            if candidate.is_file():
                sources[name] = candidate
                break
        else:
            return None
    raw = Path(workdir) / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, source in sources.items():
        if source.suffix == ".gz":
            with gzip.open(source, "rb") as packed, open(raw / name, "wb") as plain:
                shutil.copyfileobj(packed, plain)
        else:
            (raw / name).symlink_to(source.resolve())
    return workdir


def read_split(dataset_dir, train, limit=None):
    """The uint8 images (N, 28, 28) and int64 labels (N,) of one split, via torchvision."""
    with tempfile.TemporaryDirectory(prefix="mnist_") as workdir:
        try:
            root = _flat_layout_root(dataset_dir, workdir) or dataset_dir
        except (OSError, EOFError) as error:
            raise dataset_error(dataset_dir, f"a gzipped file is corrupt ({error})") from error
        try:
            dataset = MNIST(root, train=train, download=True)
        # torchvision's IDX parser asserts on a bad header and fails a reshape on a short file.
        except (RuntimeError, OSError, AssertionError, ValueError, IndexError) as error:
            present = all((Path(root) / "MNIST" / "raw" / name).is_file() for name in IDX_FILES)
            problem = ("an IDX file is truncated or corrupt" if present
                       else "the files are missing and the download failed")
            detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise dataset_error(dataset_dir, f"{problem} ({detail})") from error
    images, labels = dataset.data, dataset.targets
    if images.dim() != 3 or images.shape[1:] != (28, 28) or images.size(0) != labels.size(0):
        raise dataset_error(dataset_dir, f"the {'training' if train else 'test'} files do not match "
                                         f"({tuple(images.shape)} images, {labels.size(0)} labels)")
    if labels.numel() and (labels.min() < 0 or labels.max() > 9):
        raise dataset_error(dataset_dir, "a label file holds values outside 0-9")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def load_dataset(dataset_dir, train_batch_size=128, test_batch_size=128, img_show=False,
                 device="cpu", seed=0, max_train_samples=None, max_test_samples=None,
                 holdout_classes=(), rank=0, world_size=1, show_path=DEFAULT_SHOW_PATH):
    """Return `(train_loader, test_loader, classes)` as in the article.

    The loaders yield normalised `(images, digits)` on `device`; the training one is
    shuffled every epoch from `seed`. `max_*_samples` keep the first N images of a split.
    The digits in `holdout_classes` are left out of the training split (after the first
    N are taken) and out of `classes`, the names of the digits a model is trained on.
    Under distributed training, `rank` of `world_size` gets its share of each split (see
    TensorLoader) and `train_batch_size` is the global batch.
    Raises `DatasetError` with a readable message when the data cannot be had.
    """
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    loaders = []
    for train, limit, batch_size in ((True, max_train_samples, train_batch_size),
                                     (False, max_test_samples, test_batch_size)):
        images, labels = read_split(dataset_dir, train, limit)
        if train and holdout_classes:
            keep = ~torch.isin(labels, torch.tensor(list(holdout_classes)))
            images, labels = images[keep], labels[keep]
            if not len(labels):
                raise DatasetError(f"no training image is left after holding out digits {list(holdout_classes)}")
        loaders.append(TensorLoader(normalize(images, device), labels.to(device), batch_size, shuffle=train,
                                    generator=generator if train else None, rank=rank, world_size=world_size))
    train_loader, test_loader = loaders
    if img_show:
        show_data(train_loader, show_path, show=True)
    classes = tuple(name for digit, name in enumerate(CLASSES) if digit not in holdout_classes)
    return train_loader, test_loader, classes


def digit_to_class(classes, device):
    """Lookup tensor: digit -> index of its class in the model's outputs, -1 if held out."""
    lookup = torch.full((10,), -1, dtype=torch.long)
    lookup[[int(name) for name in classes]] = torch.arange(len(classes))
    return lookup.to(device)


def display_available():
    return os.name == "nt" or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def show_data(loader, path=DEFAULT_SHOW_PATH, show=False):
    """Write one training batch as a 16-wide image grid to `path`; open a window when
    `show` is asked and a display exists. Returns the path written."""
    images, _ = next(iter(loader))
    images = images.cpu() * MNIST_STD + MNIST_MEAN
    path = Path(path)
    grid = io.BytesIO()
    save_image(images, grid, nrow=16, format="png")
    atomic_write(path, grid.getvalue())
    if show and display_available():
        import matplotlib.pyplot as plt  # only here: importing pyplot picks a GUI backend
        plt.imshow(make_grid(images, nrow=16).permute(1, 2, 0).clamp(0, 1))
        plt.axis("off")
        plt.show()
    elif show:
        print(f"No display found; the batch grid is in {path}")
    return path
