"""The datasets as the trainer and the commands read them: IDX files checked, image folders.

`read_split` reads one split of a dataset of mnist_loader.DATASETS: the four IDX files in
torchvision's layout or directly in the folder, plain or .gz, refused when their checksums
are another known dataset's; or a folder of one's own images, listed as torchvision's
`ImageFolder` lists it, each image made 28x28 grayscale (see `folder_image`), the result
cached beside the images. `load_dataset` is mnist_loader's with these readers and, with
P and K, PK training batches.
"""
import gzip
import hashlib
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

import mnist_loader
from mnist_loader import DATASETS, DatasetError

from .checkpointing import WriteError, save_checkpoint
from .pk_batches import training_loader

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

FOLDER_SIDE = 28  # a folder's images are made this size, as the IDX datasets' are
# The decoded splits of an image folder, kept in it: DIR/decoded_train.pt, DIR/decoded_test.pt.
DECODED_FILE = "decoded_{}.pt"
# Changed whenever folder_image changes, so that no cache of the old recipe is used.
FOLDER_RECIPE = "L, 16-bit grey / 257, bilinear 28x28 stretch; v1"

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


def from_16_bit(image):
    """The pixels of the 16-bit grey Pillow `image` as uint8 (divided by 257, rounded), which
    Pillow's convert("L") would clip."""
    return (np.asarray(image) / 257).round().astype(np.uint8)


def folder_image(path):
    """The image file at `path` as one of a folder dataset's images: uint8 (28, 28)
    grayscale. Pillow decodes it and converts it to grayscale ("L": luma from colour, any
    transparency dropped; 16-bit grey divided by 257); one of another size is resized to
    28x28 with Pillow's bilinear filter (antialiased when shrinking), its aspect not kept,
    as torchvision's Resize((28, 28)) does. DatasetError naming the file when Pillow cannot
    read it."""
    try:
        with Image.open(path) as image:
            if image.mode.startswith("I;16"):
                gray = Image.fromarray(from_16_bit(image))
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
    """Cache a decoded split at `path`, put in place whole (see checkpointing.atomic_write);
    in a folder that cannot be written, nothing is cached and the split is decoded on every
    load."""
    try:
        save_checkpoint(path, decoded)
    except WriteError:  # a full disk too: no cache, and no half-written file left
        pass



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


def normalization(dataset, dataset_dir):
    """The (mean, std) that normalise `dataset` (see mnist_loader.normalization), its
    training split read from `dataset_dir` only when it states none."""
    stated = DATASETS[dataset].mean is not None
    train_images = None if stated else read_split(dataset_dir, train=True, dataset=dataset)[0]
    return mnist_loader.normalization(dataset, train_images)


def load_dataset(dataset_dir, *args, dataset="mnist", classes_per_batch=None,
                 images_per_class=None, **kwargs):
    """mnist_loader.load_dataset of `dataset` read by `read_split`, with its class names (a
    folder's: its class folders); with `classes_per_batch` P and `images_per_class` K, the
    training batches are PK batches (see pk_batches), the test loader keeping plain ones.
    Raises `DatasetError` with a readable message when the data cannot be had, BatchError
    when P and K cannot make batches of it."""
    return mnist_loader.load_dataset(
        dataset_dir, *args, dataset=dataset, read_split=read_split,
        class_names=class_names(dataset, dataset_dir=dataset_dir),
        train_loader=training_loader(classes_per_batch, images_per_class), **kwargs)
