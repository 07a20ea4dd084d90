"""The article's data step: MNIST decoded once into normalised tensors on the training device.

`load_dataset()` returns the article's `(train_loader, test_loader, classes)`; torchvision's
`MNIST` (or `FashionMNIST`, `KMNIST`) parses the IDX files. Then every epoch is a `randperm`
on the device and tensor indexing: no DataLoader workers, no PIL image per sample per epoch.
Checked IDX files, image folders and PK batches are run_machinery's (datasets, pk_batches).
"""
import copy
import io
import math
from dataclasses import dataclass

import torch
from torchvision.datasets import KMNIST, MNIST, FashionMNIST, ImageFolder
from torchvision.utils import make_grid, save_image


@dataclass(frozen=True)
class Dataset:
    """A dataset of 28x28 grayscale images: its torchvision class (named as its folder
    NAME/raw/), the mean and std of its training images in 0-1 (None: computed from them
    when loaded), and its class names (None: a folder dataset's, its class folders)."""
    title: str
    torchvision_class: type
    mean: float
    std: float
    class_names: tuple

    @property
    def folder(self):
        return self.torchvision_class.__name__


DATASETS = {
    # The article's values, those of torchvision's and pytorch/examples' MNIST code.
    "mnist": Dataset("MNIST", MNIST, 0.1307, 0.3081, tuple(str(label) for label in range(10))),
    # Computed from the 60,000 training images of Debian's copy: 0.28604 and 0.35302.
    "fashion-mnist": Dataset("Fashion-MNIST", FashionMNIST, 0.2860, 0.3530,
                             ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                              "Shirt", "Sneaker", "Bag", "Ankle boot")),
    # Published values disagree, and no copy was at hand: computed from its training images
    # when loaded. The names: the romanised hiragana of its class map.
    "kmnist": Dataset("Kuzushiji-MNIST", KMNIST, None, None,
                      ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")),
    # One's own images in ImageFolder's layout, DIR/train/CLASS/* and DIR/test/CLASS/*.
    "folder": Dataset("the image folder", ImageFolder, None, None, None),
}
MNIST_MEAN, MNIST_STD = DATASETS["mnist"].mean, DATASETS["mnist"].std


class DatasetError(Exception):
    """The dataset could not be found, downloaded or read; the message, one line, says where
    and what (the scripts print it as the user's error to fix)."""


class TensorLoader:
    """Yields `(images, labels)` batches of tensors already on the device. With `shuffle`,
    every pass takes a fresh `randperm` from `generator` (on the data's device): the order
    is reproducible from the seed. Under torchrun each of `world_size` processes makes one:
    a shuffled one gives its `rank` every `world_size`-th item of the same permutation, in
    batches of `batch_size // world_size` (together the single-process batches); an
    unshuffled one (the test split) gives each rank one contiguous part. `mean` and `std`:
    the images' normalisation (see `normalize`); `class_names`: the names of the labels 0,
    1, ...; `classes`: the labels a model is trained on, in the order of its outputs."""

    def __init__(self, images, labels, batch_size, shuffle=False, generator=None, rank=0,
                 world_size=1, mean=0.0, std=1.0, classes=None,
                 class_names=DATASETS["mnist"].class_names):
        self.images, self.labels = images, labels
        self.mean, self.std = mean, std
        self.class_names = list(class_names)
        classes = range(len(class_names)) if classes is None else classes
        # label -> the model's output index of its class (-1: held out)
        self.class_of_label = label_to_class(classes, labels.device, len(class_names))
        self.shuffle, self.generator = shuffle, generator
        self.rank, self.world_size = rank, world_size
        if shuffle:
            # The last N % world_size items of each permutation left out: equal steps.
            self.batch_size = batch_size // world_size
            self.num_samples = labels.size(0) // world_size
        else:
            self.batch_size = batch_size
            part = torch.arange(labels.size(0)).tensor_split(world_size)[rank]
            self.first = int(part[0]) if part.numel() else 0
            self.num_samples = part.numel()

    def __len__(self):
        return math.ceil(self.num_samples / self.batch_size)

    def pixels(self, images):
        """`images` of this loader with their normalisation undone: pixel values in 0-1."""
        return images * self.std + self.mean

    def to(self, device):
        """This loader with its tensors on `device`; its generator, not yet drawn from, made
        anew there with the same seed (a generator lives on one device)."""
        device = torch.device(device)
        if self.labels.device == device:
            return self
        moved = copy.copy(self)
        moved.images, moved.labels = self.images.to(device), self.labels.to(device)
        moved.class_of_label = self.class_of_label.to(device)
        if self.generator is not None:
            seed = self.generator.initial_seed()
            moved.generator = torch.Generator(device=device).manual_seed(seed)
        return moved

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.labels.size(0), device=self.labels.device,
                                   generator=self.generator)
            mine = order[self.rank:self.num_samples * self.world_size:self.world_size]
            for start in range(0, self.num_samples, self.batch_size):
                index = mine[start:start + self.batch_size]
                yield self.images[index], self.labels[index]
        else:
            for start in range(self.first, self.first + self.num_samples, self.batch_size):
                stop = min(start + self.batch_size, self.first + self.num_samples)
                yield self.images[start:stop], self.labels[start:stop]


def normalize(images_uint8, device, mean=MNIST_MEAN, std=MNIST_STD):
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), computed as ToTensor() then Normalize()."""
    images = images_uint8.to(device).unsqueeze(1).to(torch.float32).div(255)
    mean = torch.tensor(mean, dtype=torch.float32, device=device)
    std = torch.tensor(std, dtype=torch.float32, device=device)
    return images.sub_(mean).div_(std)


def normalization(dataset, train_images):
    """The (mean, std) that normalise `dataset`: its stated values, or those of its whole
    training split `train_images` (uint8), rounded to 4 places."""
    if DATASETS[dataset].mean is not None:
        return DATASETS[dataset].mean, DATASETS[dataset].std
    pixels = train_images.double().div(255)
    return round(pixels.mean().item(), 4), round(pixels.std().item(), 4)


def torchvision_split(dataset_dir, train, dataset="mnist"):
    """The uint8 images (N, 28, 28) and int64 labels (N,) of a split of an IDX dataset in
    torchvision's layout, DATASET_DIR/NAME/raw/ (downloaded there when missing)."""
    split = DATASETS[dataset].torchvision_class(dataset_dir, train=train, download=True)
    return split.data, split.targets


def load_dataset(dataset_dir, train_batch_size=128, test_batch_size=128, device="cpu", seed=0,
                 max_train_samples=None, max_test_samples=None, holdout_classes=(), rank=0,
                 world_size=1, dataset="mnist", read_split=torchvision_split, class_names=None,
                 train_loader=TensorLoader):
    """Return `(train_loader, test_loader, classes)` as in the article, of `dataset` (a key
    of DATASETS): normalised `(images, labels)` on `device`, the labels class indices 0, 1,
    ...; the training ones shuffled every epoch from `seed`. `max_*_samples` keep the first N
    images of a split. The classes in `holdout_classes` are left out of the training split
    (after the first N are taken) and of `classes`, those a model is trained on, in order.
    Under torchrun, `rank` of `world_size` gets its share of each split (see TensorLoader);
    `train_batch_size` is the global batch. `read_split(dataset_dir, train=, dataset=)` reads
    a split's uint8 images and labels, `class_names` names the labels (default: the
    dataset's), `train_loader` makes the training loader (run_machinery.datasets: its own)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    names = DATASETS[dataset].class_names if class_names is None else class_names
    classes = tuple(index for index in range(len(names)) if index not in holdout_classes)
    loaders = []
    for train, limit, batch_size in ((True, max_train_samples, train_batch_size),
                                     (False, max_test_samples, test_batch_size)):
        images, labels = read_split(dataset_dir, train=train, dataset=dataset)
        if train:
            mean, std = normalization(dataset, images)  # of the whole training split
        images, labels = images[:limit], labels[:limit]
        if train and holdout_classes:
            keep = ~torch.isin(labels, torch.tensor(list(holdout_classes)))
            images, labels = images[keep], labels[keep]
            if not len(labels):
                raise DatasetError("no training image is left after holding out classes "
                                   f"{list(holdout_classes)}")
        loaders.append((train_loader if train else TensorLoader)(
            normalize(images, device, mean, std), labels.to(device), batch_size, shuffle=train,
            generator=generator if train else None, rank=rank, world_size=world_size, mean=mean,
            std=std, classes=classes, class_names=names))
    return (*loaders, classes)


def show_data(images, save, show=False):
    """The article's look at its data: `images` (N, 1, 28, 28, pixel values in 0-1) as a
    16-wide grid, given to `save` as PNG bytes; then, with `show`, shown in a window."""
    grid = io.BytesIO()
    save_image(images, grid, nrow=16, format="png")
    save(grid.getvalue())
    if show:
        import matplotlib.pyplot as plt  # only here: importing pyplot picks a GUI backend
        plt.imshow(make_grid(images, nrow=16).permute(1, 2, 0).clamp(0, 1))
        plt.axis("off")
        plt.show()


def label_to_class(classes, device, num_labels=10):
    """Lookup tensor: label (a digit, for MNIST) -> index of its class in the model's outputs,
    -1 if held out; `classes`: the labels trained on, in order, of 0 to `num_labels` - 1."""
    lookup = torch.full((num_labels,), -1, dtype=torch.long)
    lookup[torch.tensor(classes, dtype=torch.long)] = torch.arange(len(classes))
    return lookup.to(device)
