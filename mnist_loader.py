"""MNIST, Fashion-MNIST, Kuzushiji-MNIST or a folder of one's own images, decoded once
into normalised tensors that live on the training device.

torchvision's `MNIST`, `FashionMNIST` or `KMNIST` class finds (or downloads) and parses
the IDX files; a folder of images is listed as torchvision's `ImageFolder` lists it, each
image made 28x28 grayscale (see `folder_image`), the result cached beside the images.
After that, every epoch is a `randperm` on the device and tensor indexing: no DataLoader
workers, no PIL image per sample per epoch.
"""
import copy
import gzip
import hashlib
import json
import math
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.datasets import KMNIST, MNIST, FashionMNIST, ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class Dataset:
    """A dataset of 28x28 grayscale images: its torchvision class (for the IDX datasets,
    whose name is also the folder of torchvision's layout, NAME/raw/), the mean and
    standard deviation of its training images in 0-1 (None: computed from them when
    loaded), and its class names (None: the folder dataset's, from its class folders)."""
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
    # Computed from the 60,000 training images of Debian's dataset-fashion-mnist:
    # 0.28604 and 0.35302.
    "fashion-mnist": Dataset("Fashion-MNIST", FashionMNIST, 0.2860, 0.3530,
                             ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                              "Shirt", "Sneaker", "Bag", "Ankle boot")),
    # No copy of KMNIST was at hand to compute them once, and published values disagree:
    # computed from its training images whenever it is loaded. The names are the
    # romanised hiragana of its class map (o, ki, su, ...).
    "kmnist": Dataset("Kuzushiji-MNIST", KMNIST, None, None,
                      ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")),
    # One's own images in ImageFolder's layout, DIR/train/CLASS/* and DIR/test/CLASS/*.
    "folder": Dataset("the image folder", ImageFolder, None, None, None),
}
FOLDER_SIDE = 28  # a folder's images are made this size, as the IDX datasets' are
# The decoded splits of an image folder, kept in it: DIR/decoded_train.pt, DIR/decoded_test.pt.
DECODED_FILE = "decoded_{}.pt"
# Changed whenever folder_image changes, so that no cache of the old recipe is used.
FOLDER_RECIPE = "L, 16-bit grey / 257, bilinear 28x28 stretch; v1"
MNIST_MEAN, MNIST_STD = DATASETS["mnist"].mean, DATASETS["mnist"].std
# SHA-256 of the IDX files' contents (unpacked), computed once from Debian's copies: MNIST's
# unpacked files (as its SHA256SUMS lists them) and Fashion-MNIST's .gz files, decompressed.
# torchvision's MD5s (its classes' `resources`) are of its own .gz files, which match no
# repacked or unpacked copy; they still name its downloads, KMNIST's among them.
KNOWN_CONTENTS = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}


class BatchError(ValueError):
    """PK batches that cannot be drawn from this data; the message, one line, names the flags."""


class DatasetError(Exception):
    """The dataset could not be found, downloaded or read; the message, one line, says
    where and what (the scripts print it as the user's error to fix)."""


def dataset_error(dataset, dataset_dir, reason):
    return DatasetError(
        f"{DATASETS[dataset].title} could not be loaded from "
        f"{os.path.abspath(dataset_dir)}: {reason}. "
        f"Give --dataset_dir a folder holding the four IDX files {', '.join(IDX_FILES)} "
        f"(plain or .gz), directly or in its {DATASETS[dataset].folder}/raw/ subfolder; without "
        f"them they are downloaded there, which needs a network.")


def folder_error(dataset_dir, reason):
    return DatasetError(f"the image folder {os.path.abspath(dataset_dir)} could not be loaded: "
                        f"{reason}. Expected DIR/train/CLASS/* and DIR/test/CLASS/* "
                        f"(torchvision's ImageFolder layout) with the same class folders")


def class_names(dataset, classes=None, dataset_dir=None):
    """The names of the classes of `dataset`, all of them or those of the indices `classes`:
    a folder dataset's are its class folders' in `dataset_dir` (see `folder_classes`)."""
    names = (folder_classes(dataset_dir) if DATASETS[dataset].class_names is None
             else DATASETS[dataset].class_names)
    return list(names) if classes is None else [names[index] for index in classes]


def folder_classes(dataset_dir):
    """The class names of the image folder `dataset_dir`: the folders in its train/, sorted
    as ImageFolder sorts them (their order gives the labels 0, 1, ...). DatasetError, one
    line, when train/ or test/ is missing, when there are fewer than two classes, or when
    a class folder is in one of them only (every class needs test images)."""
    found = {}
    for split in ("train", "test"):
        root = Path(dataset_dir) / split
        if not root.is_dir():
            raise folder_error(dataset_dir, f"it has no {split}/ folder")
        try:
            found[split] = find_classes(root)[0]
        except FileNotFoundError:  # ImageFolder's "Couldn't find any class folder"
            raise folder_error(dataset_dir, f"{split}/ holds no class folder") from None
    train, test = found["train"], found["test"]
    if len(train) < 2:
        raise folder_error(dataset_dir, f"train/ holds {len(train)} class folder "
                           f"({', '.join(train)}); a classifier needs at least two")
    for split, names, other in (("test", test, train), ("train", train, test)):
        alone = [name for name in names if name not in other]
        if alone:
            raise folder_error(dataset_dir, f"the class folder(s) {', '.join(alone)} of {split}/ "
                               f"have none in {'train' if split == 'test' else 'test'}/")
    return train


def folder_image(path):
    """The image file at `path` as one of a folder dataset's images: uint8 (28, 28)
    grayscale. Pillow decodes it and converts it to grayscale ("L": luma from colour, any
    transparency dropped; 16-bit grey divided by 257); one of another size is resized to
    28x28 with Pillow's bilinear filter (antialiased when shrinking), its aspect not kept,
    as torchvision's Resize((28, 28)) does. DatasetError naming the file when Pillow cannot
    read it."""
    try:
        with Image.open(path) as image:
            if image.mode.startswith("I;16"):  # Pillow's convert("L") would clip it
                gray = Image.fromarray((np.asarray(image) / 257).round().astype(np.uint8))
            else:
                gray = image.convert("L")
        if gray.size != (FOLDER_SIDE, FOLDER_SIDE):
            gray = gray.resize((FOLDER_SIDE, FOLDER_SIDE), Image.Resampling.BILINEAR)
        return np.asarray(gray)
    # Pillow's decoders raise these too, and its size guard DecompressionBombError.
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DatasetError(f"{os.path.abspath(path)} is not an image Pillow can read "
                           f"({detail})") from None


def read_folder_split(dataset_dir, train):
    """The uint8 images (N, 28, 28) and int64 labels (N,) of the train/ or test/ folder of the
    image folder `dataset_dir`, in ImageFolder's order: class by class, then by file path.
    Decoded once, then read from DIR/decoded_train.pt or decoded_test.pt, which holds them
    with the list of the files, their sizes and modification times: a change to any file,
    or a file added or removed, decodes the split anew."""
    classes = folder_classes(dataset_dir)
    split = "train" if train else "test"
    try:
        samples = make_dataset(Path(dataset_dir) / split,
                               {name: label for label, name in enumerate(classes)},
                               IMG_EXTENSIONS)
    except FileNotFoundError as error:  # a class folder without an image file
        raise folder_error(dataset_dir, f"{split}/ has a class folder without an image file "
                                        f"({error})") from None
    stats = [os.stat(path) for path, _ in samples]
    files = [(os.path.relpath(path, dataset_dir), label, stat.st_size, stat.st_mtime_ns)
             for (path, label), stat in zip(samples, stats)]
    key = hashlib.sha256(json.dumps([FOLDER_RECIPE, classes, files]).encode()).hexdigest()
    cache = Path(dataset_dir) / DECODED_FILE.format(split)
    decoded = read_decoded(cache, key)
    if decoded is None:
        decoded = {"key": key,
                   "images": torch.from_numpy(np.stack([folder_image(path)
                                                        for path, _ in samples])),
                   "labels": torch.tensor([label for _, label in samples], dtype=torch.long)}
        write_decoded(cache, decoded)
    return decoded["images"], decoded["labels"]


def read_decoded(path, key):
    """The decoded split cached at `path` if it is that of the files `key` names, else None."""
    if not path.is_file():
        return None
    try:
        decoded = torch.load(path, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):  # cut short: decode anew
        return None
    return decoded if isinstance(decoded, dict) and decoded.get("key") == key else None


def write_decoded(path, decoded):
    """Cache a decoded split at `path`, put in place whole (a rename); in a folder that
    cannot be written, nothing is cached and the split is decoded on every load."""
    temp_path = None
    try:
        handle, temp_path = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                             suffix=".tmp")
        with os.fdopen(handle, "wb") as file:
            torch.save(decoded, file)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_path, 0o666 & ~umask)  # mkstemp's file is private; this one is the folder's
        os.replace(temp_path, path)
    except (OSError, RuntimeError):  # a full disk too: no cache, and no half-written file left
        if temp_path is not None:
            Path(temp_path).unlink(missing_ok=True)


class TensorLoader:
    """Yields `(images, labels)` batches of tensors already on the device.

    With `shuffle`, every pass takes a fresh `randperm` from `generator` (on the data's
    device), so the order is reproducible from the seed. Under distributed training each
    of `world_size` processes makes one: a shuffled loader gives its `rank` every
    `world_size`-th item of the same permutation, in batches of `batch_size // world_size`,
    so that the ranks' batches together are the single-process batches; an unshuffled
    one (the test split) gives each rank one contiguous part. `mean` and `std` are the
    normalisation the images had (see `normalize`), for pictures of them; `class_names`
    the names of the labels 0, 1, ... (by default MNIST's digits); `classes` the labels a
    model is trained on, in the order of its outputs (default: all).

    With `classes_per_batch` P and `images_per_class` K (both, and only with `shuffle`),
    the batches are PK batches instead, as for re-identification and the batch-hard
    triplet loss: every global batch holds K distinct images of each of P distinct classes
    (of those present in `labels`), grouped class by class; an epoch has
    `len(labels) // (P*K)` of them (at least one), and `batch_size` is then ignored. Each
    epoch, each class's images are taken in a random order of their own, from where the
    class's last batch left off, round again once all were taken. Under distributed
    training rank `r` takes items r, r + world_size, ... of each global batch, so P*K must
    divide evenly.
    """

    def __init__(self, images, labels, batch_size, shuffle=False, generator=None, rank=0,
                 world_size=1, mean=0.0, std=1.0, classes=None,
                 classes_per_batch=None, images_per_class=None,
                 class_names=DATASETS["mnist"].class_names):
        self.images = images
        self.labels = labels
        self.mean, self.std = mean, std
        self.class_names = list(class_names)
        classes = range(len(class_names)) if classes is None else classes
        # label -> the model's output index of its class (-1: held out); `classes`: those
        # trained on.
        self.class_of_label = label_to_class(classes, labels.device, len(class_names))
        self.shuffle = shuffle
        self.generator = generator
        self.rank = rank
        self.world_size = world_size
        total = labels.size(0)
        self.classes_per_batch, self.images_per_class = classes_per_batch, images_per_class
        if classes_per_batch is not None or images_per_class is not None:
            global_batch = self._check_pk(shuffle)
            self.steps = max(1, total // global_batch)
            self.batch_size = global_batch // world_size
            # The images of an epoch, so that sums / (num_samples * world_size) are means.
            self.num_samples = self.steps * self.batch_size
        elif shuffle:
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

    def _check_pk(self, shuffle):
        """The global PK batch size, P*K; ValueError (one line, naming the flags) when P and
        K cannot make such batches of this loader's labels."""
        p, k = self.classes_per_batch, self.images_per_class
        if p is None or k is None:
            raise BatchError("--classes_per_batch and --images_per_class go together: "
                             "give both or neither")
        if not shuffle:
            raise BatchError("--classes_per_batch and --images_per_class only draw shuffled "
                             "(training) batches")
        _, counts = self._classes_in_order(self.labels)
        present = counts[counts > 0].tolist()
        if not present:
            raise BatchError("--classes_per_batch and --images_per_class need training images")
        if not 1 <= p <= len(present):
            raise BatchError(f"--classes_per_batch {p} must be from 1 to the {len(present)} "
                             "classes of the training images")
        if not 1 <= k <= min(present):
            raise BatchError(f"--images_per_class {k} must be from 1 to {min(present)}, the "
                             "training images of the smallest class")
        if p * k % self.world_size:
            raise BatchError(f"--classes_per_batch {p} x --images_per_class {k} = {p * k} "
                             f"images do not split evenly among {self.world_size} processes")
        return p * k

    def _classes_in_order(self, labels):
        """Per label (0, 1, ...): where its items start in `labels` sorted, and how many there
        are (searchsorted rather than bincount: deterministic on every device)."""
        values = torch.arange(self.class_of_label.numel(), device=labels.device)
        ordered = labels.sort().values
        starts = torch.searchsorted(ordered, values)
        return starts, torch.searchsorted(ordered, values, right=True) - starts

    def _pk_plan(self):
        """The items of every global PK batch of one epoch, (steps, P*K), class by class:
        all drawn here from `generator`, on the data's device, with no host sync."""
        p, k, labels = self.classes_per_batch, self.images_per_class, self.labels
        device = labels.device
        starts, counts = self._classes_in_order(labels)
        # Every class's items in a random order of their own: a random permutation, then
        # stably grouped by label.
        shuffled = torch.randperm(labels.size(0), device=device, generator=self.generator)
        by_class = shuffled[labels[shuffled].argsort(stable=True)]
        # P distinct classes per step: the first P of a random order of the present ones
        # (the absent ones, keyed 2 > any draw in [0, 1), come last).
        keys = torch.rand(self.steps, counts.numel(), device=device, generator=self.generator)
        chosen = keys.masked_fill(counts == 0, 2.0).argsort(dim=1)[:, :p]
        # How often each chosen class was chosen in earlier steps: its next K items start
        # there in its order, round again past its end (K <= its size: K distinct items).
        picked = torch.zeros_like(keys, dtype=torch.long).scatter_(1, chosen, 1)
        earlier = (picked.cumsum(0) - picked).gather(1, chosen)
        within = ((earlier * k).unsqueeze(2) + torch.arange(k, device=device)
                  ) % counts[chosen].unsqueeze(2)
        return by_class[starts[chosen].unsqueeze(2) + within].flatten(1)

    def pixels(self, images):
        """`images` of this loader with their normalisation undone: pixel values in 0-1."""
        return images * self.std + self.mean

    def to(self, device):
        """This loader with its tensors on `device`; a shuffling generator not yet drawn from
        is made anew there with the same seed (a generator lives on one device)."""
        device = torch.device(device)
        if self.labels.device == device:
            return self
        moved = copy.copy(self)
        moved.images, moved.labels = self.images.to(device), self.labels.to(device)
        moved.class_of_label = self.class_of_label.to(device)
        if self.generator is not None:
            moved.generator = torch.Generator(device=device)
            moved.generator.manual_seed(self.generator.initial_seed())
        return moved

    def __iter__(self):
        if self.classes_per_batch is not None:
            # Drawn whole at the start, so a resumed epoch (the generator's state of its start
            # restored, the steps done skipped) gets the same batches.
            plan = self._pk_plan()[:, self.rank::self.world_size]
            for index in plan:
                yield self.images[index], self.labels[index]
        elif self.shuffle:
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


def normalization(dataset, dataset_dir, train_images=None):
    """The (mean, std) that normalise `dataset`: its stated values, or those of its whole
    training split (`train_images`, else read from `dataset_dir`), rounded to 4 places."""
    if DATASETS[dataset].mean is not None:
        return DATASETS[dataset].mean, DATASETS[dataset].std
    if train_images is None:
        train_images, _ = read_split(dataset_dir, train=True, dataset=dataset)
    pixels = train_images.double().div(255)
    return round(pixels.mean().item(), 4), round(pixels.std().item(), 4)


def idx_sources(folder):
    """The four IDX files in `folder`, name -> path (the plain file, else the .gz one), or
    None when it does not hold them all."""
    sources = {}
    for name in IDX_FILES:
        for candidate in (Path(folder) / name, Path(folder) / f"{name}.gz"):
            if candidate.is_file():
                sources[name] = candidate
                break
        else:
            return None
    return sources


def known_datasets(name, content, source):
    """The datasets (keys of DATASETS) whose IDX file `name` is `content`, read from
    `source` (a .gz file's own MD5 is compared with torchvision's)."""
    digest = hashlib.sha256(content).hexdigest()
    packed = (hashlib.md5(source.read_bytes()).hexdigest() if source.suffix == ".gz"
              else None)
    return {key for key, dataset in DATASETS.items()
            if KNOWN_CONTENTS.get(key, {}).get(name) == digest
            or (packed and (f"{name}.gz", packed) in getattr(dataset.torchvision_class,
                                                             "resources", ()))}


def check_known_files(dataset, dataset_dir, raw, sources, train):
    """DatasetError when the split's files in `raw` (read from `sources`) are another known
    dataset's. Files that match no known copy (subsets, reordered or edited copies, the
    tests' synthetic files, KMNIST's unpacked ones) are taken as the dataset named."""
    split = "train" if train else "t10k"
    names = [name for name in IDX_FILES if name.startswith(split)]
    contents = {name: (Path(raw) / name).read_bytes() for name in names}
    matches = [known_datasets(name, contents[name], sources[name]) for name in names]
    others = sorted(set().union(*matches) - {dataset})
    title, words = DATASETS[dataset].title, "training" if train else "test"
    if others:
        raise DatasetError(f"the files in {os.path.abspath(dataset_dir)} are not "
                           f"{title}'s: they are {DATASETS[others[0]].title}'s {words} files "
                           f"(their checksums match); train on them with --dataset {others[0]}, "
                           f"or give --dataset_dir the folder of {title}'s files")


def _flat_layout_root(dataset_dir, workdir, folder="MNIST"):
    """Give a folder holding the four files directly the FOLDER/raw/ layout torchvision reads.

    Returns a root for `MNIST(root)`, or None when `dataset_dir` does not hold them all.
    Plain files are linked, gzipped ones decompressed, into `workdir`.
    """
    sources = idx_sources(dataset_dir)
    if sources is None:
        return None
    raw = Path(workdir) / folder / "raw"
    raw.mkdir(parents=True)
    for name, source in sources.items():
        if source.suffix == ".gz":
            with gzip.open(source, "rb") as packed, open(raw / name, "wb") as plain:
                shutil.copyfileobj(packed, plain)
        else:
            (raw / name).symlink_to(source.resolve())
    return workdir


def other_layouts(dataset, dataset_dir):
    """ "; it holds NAME/raw/: --dataset KEY?" for another IDX dataset's files in
    torchvision's layout in `dataset_dir`, else ""."""
    for key, other in DATASETS.items():
        if (key != dataset and other.class_names is not None
                and idx_sources(Path(dataset_dir) / other.folder / "raw")):
            return f"; it holds {other.folder}/raw/: --dataset {key}?"
    return ""


def read_split(dataset_dir, train, limit=None, dataset="mnist"):
    """The uint8 images (N, 28, 28) and int64 labels (N,) of one split of `dataset` (a key
    of DATASETS), via torchvision."""
    if DATASETS[dataset].class_names is None:
        images, labels = read_folder_split(dataset_dir, train)
        return images[:limit], labels[:limit]
    folder = DATASETS[dataset].folder
    with tempfile.TemporaryDirectory(prefix="mnist_") as workdir:
        try:
            root = _flat_layout_root(dataset_dir, workdir, folder) or dataset_dir
        except (OSError, EOFError) as error:
            raise dataset_error(dataset, dataset_dir,
                                f"a gzipped file is corrupt ({error})") from error
        raw = Path(root) / folder / "raw"
        sources = idx_sources(dataset_dir) or idx_sources(raw)
        if sources:
            check_known_files(dataset, dataset_dir, raw, sources, train)
        # A download makes NAME/raw/: what it made goes again when it fails.
        made = next((path for path in (Path(dataset_dir), Path(dataset_dir) / folder, raw)
                     if not path.exists()), None) if not sources else None
        try:
            split = DATASETS[dataset].torchvision_class(root, train=train, download=True)
        # torchvision's IDX parser asserts on a bad header and fails a reshape on a short file.
        except (RuntimeError, OSError, AssertionError, ValueError, IndexError) as error:
            if made is not None:
                shutil.rmtree(made, ignore_errors=True)
            problem = ("an IDX file is truncated or corrupt" if sources
                       else "the files are missing and the download failed"
                       + other_layouts(dataset, dataset_dir))
            detail = (str(error).strip().splitlines()[0] if str(error).strip()
                      else type(error).__name__)
            raise dataset_error(dataset, dataset_dir, f"{problem} ({detail})") from error
    images, labels = split.data, split.targets
    if images.dim() != 3 or images.shape[1:] != (28, 28) or images.size(0) != labels.size(0):
        raise dataset_error(dataset, dataset_dir,
                            f"the {'training' if train else 'test'} files do not match "
                            f"({tuple(images.shape)} images, {labels.size(0)} labels)")
    if labels.numel() and (labels.min() < 0 or labels.max() > 9):
        raise dataset_error(dataset, dataset_dir, "a label file holds values outside 0-9")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def load_dataset(dataset_dir, train_batch_size=128, test_batch_size=128, device="cpu", seed=0,
                 max_train_samples=None, max_test_samples=None, holdout_classes=(), rank=0,
                 world_size=1, dataset="mnist", classes_per_batch=None, images_per_class=None):
    """Return `(train_loader, test_loader, classes)` as in the article, of `dataset` (a key
    of DATASETS; the article's MNIST by default).

    The loaders yield normalised `(images, labels)` on `device`, the labels being class
    indices 0, 1, ... (for MNIST, the digits); the training one is shuffled every epoch from
    `seed`. `max_*_samples` keep the first N images of a split. The classes in
    `holdout_classes` are left out of the training split (after the first N are taken)
    and out of `classes`, the indices of the classes a model is trained on, in order.
    Under distributed training, `rank` of `world_size` gets its share of each split (see
    TensorLoader) and `train_batch_size` is the global batch. `classes_per_batch` and
    `images_per_class` make the training batches PK batches (see TensorLoader), of that
    many images instead of `train_batch_size`; the test loader keeps its plain batches.
    Raises `DatasetError` with a readable message when the data cannot be had.
    """
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    names = class_names(dataset, dataset_dir=dataset_dir)
    classes = tuple(index for index in range(len(names)) if index not in holdout_classes)
    loaders = []
    for train, limit, batch_size in ((True, max_train_samples, train_batch_size),
                                     (False, max_test_samples, test_batch_size)):
        images, labels = read_split(dataset_dir, train, None if train else limit, dataset)
        if train:
            mean, std = normalization(dataset, dataset_dir, images)  # of the whole training split
            images, labels = images[:limit], labels[:limit]
        if train and holdout_classes:
            keep = ~torch.isin(labels, torch.tensor(list(holdout_classes)))
            images, labels = images[keep], labels[keep]
            if not len(labels):
                raise DatasetError("no training image is left after holding out classes "
                                   f"{list(holdout_classes)}")
        pk = dict(classes_per_batch=classes_per_batch,
                  images_per_class=images_per_class) if train else {}
        loaders.append(TensorLoader(normalize(images, device, mean, std), labels.to(device),
                                    batch_size, shuffle=train,
                                    generator=generator if train else None, rank=rank,
                                    world_size=world_size, mean=mean, std=std, classes=classes,
                                    class_names=names, **pk))
    train_loader, test_loader = loaders
    return train_loader, test_loader, classes


def label_to_class(classes, device, num_labels=10):
    """Lookup tensor: label (a digit, for MNIST) -> index of its class in the model's
    outputs, -1 if held out; `classes` are the labels trained on, in order, of the labels
    0 to `num_labels` - 1."""
    lookup = torch.full((num_labels,), -1, dtype=torch.long)
    lookup[torch.tensor(classes, dtype=torch.long)] = torch.arange(len(classes))
    return lookup.to(device)
