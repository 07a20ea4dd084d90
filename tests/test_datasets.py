import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import MNIST

from mnist_loader import DATASETS, DatasetError

from conftest import FOLDER_CLASSES, REPO_DIR, make_image_folder, make_mnist
from run_machinery import datasets
from run_machinery.datasets import (
    class_names,
    folder_image,
    from_16_bit,
    load_dataset,
    normalization,
    read_split,
)


@pytest.mark.parametrize("compress", [False, True])
def test_folder_holding_the_idx_files_directly(tmp_path, compress):
    make_mnist(tmp_path, train_count=40, test_count=20, layout="flat", compress=compress)
    train_loader, test_loader, _ = load_dataset(tmp_path)
    assert train_loader.num_samples == 40 and test_loader.num_samples == 20
    assert sorted(p.name for p in tmp_path.iterdir())[0].startswith("t10k")  # nothing added there


def test_missing_files_offline(tmp_path, offline):
    with pytest.raises(DatasetError) as error:
        load_dataset(tmp_path / "nothing_here")
    message = str(error.value)
    assert str(tmp_path / "nothing_here") in message
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert name in message
    assert "download failed" in message
    # the flag that points to a copy, and the layouts it may have
    assert ("Give --dataset_dir a folder holding the four IDX files" in message
            and "directly or in its MNIST/raw/ subfolder" in message and "\n" not in message)


def test_fashion_mnist_from_debians_folder_with_its_own_normalisation(fashion_dir):
    train_loader, test_loader, classes = load_dataset(fashion_dir, 64, 50, dataset="fashion-mnist",
                                                      holdout_classes=[6, 8])  # Shirt and Bag
    assert classes == (0, 1, 2, 3, 4, 5, 7, 9)
    assert class_names("fashion-mnist", classes)[:2] == ["T-shirt/top", "Trouser"]
    raw = MNIST(make_mnist_reference(fashion_dir), train=True)
    keep = ~torch.isin(raw.targets, torch.tensor([6, 8]))
    # Fashion-MNIST's training mean and std
    expected = (raw.data[keep].float() / 255 - 0.2860) / 0.3530
    assert torch.allclose(train_loader.images[:, 0], expected, atol=1e-6)
    assert (not torch.isin(train_loader.labels, torch.tensor([6, 8])).any()
            and test_loader.num_samples == 100)


def make_mnist_reference(flat_dir):
    """torchvision's MNIST layout of a flat .gz folder's files, for reading them as reference."""
    import gzip
    import shutil
    raw = flat_dir.parent / f"{flat_dir.name}_reference" / "MNIST" / "raw"
    if not raw.is_dir():
        raw.mkdir(parents=True)
        for packed in flat_dir.glob("*.gz"):
            with gzip.open(packed) as source, open(raw / packed.stem, "wb") as target:
                shutil.copyfileobj(source, target)
    return raw.parent.parent


REAL_FASHION_DIR = REPO_DIR.parent / "shared" / "fashion-mnist"


@pytest.mark.skipif(not REAL_FASHION_DIR.is_dir(),
                    reason=f"real Fashion-MNIST not found at {REAL_FASHION_DIR}")
def test_real_fashion_mnist_is_normalised_by_its_stated_statistics():
    train_loader, test_loader, _ = load_dataset(REAL_FASHION_DIR, dataset="fashion-mnist")
    assert (train_loader.num_samples, test_loader.num_samples) == (60000, 10000)
    images = train_loader.images.double()
    assert abs(images.mean().item()) < 1e-3 and abs(images.std().item() - 1) < 1e-3


def test_kmnist_in_torchvisions_layout_normalised_by_its_training_split(tmp_path):
    make_mnist(tmp_path, train_count=60, test_count=20, name="KMNIST")
    train_loader, _, _ = load_dataset(tmp_path, dataset="kmnist")
    assert DATASETS["kmnist"].mean is None  # no stated value: computed from the training images
    images = train_loader.images
    # Normalised by the training split's own statistics (rounded to 4 places): mean ~0, std ~1.
    assert abs(images.mean().item()) < 1e-3 and abs(images.std().item() - 1) < 1e-3
    assert class_names("kmnist")[:3] == ["o", "ki", "su"]


@pytest.mark.parametrize("dataset, folder", [("fashion-mnist", "FashionMNIST"),
                                             ("kmnist", "KMNIST")])
def test_missing_files_of_each_dataset_name_it(tmp_path, offline, dataset, folder):
    with pytest.raises(DatasetError) as error:
        load_dataset(tmp_path, dataset=dataset)
    message = str(error.value)
    assert message.startswith(f"{DATASETS[dataset].title} could not be loaded from {tmp_path}")
    assert f"in its {folder}/raw/ subfolder" in message and "t10k-labels-idx1-ubyte" in message
    assert "\n" not in message


def test_truncated_file(tmp_path):
    make_mnist(tmp_path, train_count=40, test_count=20)
    images = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        load_dataset(tmp_path)


def test_corrupt_gzip(tmp_path):
    make_mnist(tmp_path, train_count=40, test_count=20, layout="flat", compress=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="corrupt"):
        load_dataset(tmp_path)


def test_label_count_must_match_images(tmp_path):
    from conftest import write_idx
    make_mnist(tmp_path, train_count=40, test_count=20)
    write_idx(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", np.zeros(19, dtype=np.uint8))
    with pytest.raises(DatasetError, match="do not match"):
        load_dataset(tmp_path)


# Folder datasets: DIR/train/CLASS/* and DIR/test/CLASS/*.

def png_pixels(path):
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image))


def test_a_folder_loads_class_by_class_in_imagefolders_order(image_folder_dir):
    from torchvision.datasets import ImageFolder
    train_loader, test_loader, classes = load_dataset(image_folder_dir, 32, dataset="folder",
                                                      holdout_classes=[10])
    assert class_names("folder", dataset_dir=image_folder_dir) == list(FOLDER_CLASSES)
    assert classes == tuple(range(10)) and train_loader.class_names == list(FOLDER_CLASSES)
    assert train_loader.class_of_label.tolist() == [*range(10), -1]
    for loader, split, count in ((train_loader, "train", 100), (test_loader, "test", 55)):
        reference = ImageFolder(image_folder_dir / split)  # its samples: paths and labels
        samples = [(path, label) for path, label in reference.samples
                   if split == "test" or label != 10]  # koi held out of training
        assert loader.labels.tolist() == [label for _, label in samples]
        assert loader.labels.size(0) == count
        pixels = torch.stack([png_pixels(path) for path, _ in samples])
        assert torch.allclose(loader.pixels(loader.images[:, 0]), pixels / 255, atol=1e-6)
    # normalised by the whole training split's own mean and std, rounded to 4 places
    everything = torch.stack([png_pixels(path) for path, _ in
                              ImageFolder(image_folder_dir / "train").samples]).double() / 255
    assert (train_loader.mean, train_loader.std) == (round(everything.mean().item(), 4),
                                                     round(everything.std().item(), 4))
    assert (test_loader.mean, test_loader.std) == (train_loader.mean, train_loader.std)


def test_a_folder_image_is_made_28x28_grayscale(tmp_path):
    rng = np.random.default_rng(0)
    colour = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))  # 56 wide
    colour.save(tmp_path / "colour.png")
    expected = colour.convert("L").resize((28, 28), Image.Resampling.BILINEAR)
    assert np.array_equal(folder_image(tmp_path / "colour.png"), np.asarray(expected))
    deep = np.zeros((28, 28), dtype=np.uint16)
    deep[0, :3] = [0, 257 * 100, 65535]
    Image.fromarray(deep).save(tmp_path / "deep.png")  # 16-bit grey
    assert folder_image(tmp_path / "deep.png")[0, :3].tolist() == [0, 100, 255]
    gray = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    assert np.array_equal(folder_image(tmp_path / "gray.png"), gray)  # as it is


@pytest.mark.parametrize("damage, fragment", [
    (lambda d: shutil.rmtree(d / "train"), "it has no train/ folder"),
    (lambda d: shutil.rmtree(d / "test"), "it has no test/ folder"),
    (lambda d: [shutil.rmtree(path) for path in (d / "train").iterdir()],
     "train/ holds no class folder"),
    (lambda d: [shutil.rmtree(d / split / "bee") for split in ("train", "test")],
     "train/ holds 1 class folder (ant); a classifier needs at least two"),
    (lambda d: (d / "test" / "cow").mkdir(),
     "the class folder(s) cow of test/ have none in train/"),
    (lambda d: shutil.rmtree(d / "test" / "bee"),
     "the class folder(s) bee of train/ have none in test/"),
    (lambda d: [path.unlink() for path in (d / "train" / "bee").iterdir()],
     "train/ has a class folder without an image file (Found no valid file for the classes bee"),
])
def test_a_broken_folder_is_named_in_one_line(tmp_path, damage, fragment):
    make_image_folder(tmp_path, ("ant", "bee"), 8, 4)
    damage(tmp_path)
    with pytest.raises(DatasetError) as error:
        load_dataset(tmp_path, dataset="folder")
    message = str(error.value)
    assert message.startswith(f"the image folder {tmp_path} could not be loaded: ")
    assert fragment in message and "\n" not in message


def test_an_unreadable_image_is_named(tmp_path):
    make_image_folder(tmp_path, ("ant", "bee"), 8, 4)
    broken = tmp_path / "test" / "bee" / "0001.png"
    broken.write_bytes(broken.read_bytes()[:60])  # cut short
    with pytest.raises(DatasetError) as error:
        load_dataset(tmp_path, dataset="folder")
    assert str(error.value).startswith(f"{broken} is not an image Pillow can read (")
    assert "\n" not in str(error.value)


def test_a_folder_is_decoded_once_and_again_when_a_file_changes(tmp_path, monkeypatch):
    make_image_folder(tmp_path, ("ant", "bee"), 8, 4)
    images, labels = read_split(tmp_path, True, dataset="folder")
    assert (tmp_path / "decoded_train.pt").is_file()
    decoded = []
    monkeypatch.setattr(datasets, "folder_image",
                        lambda path: decoded.append(path) or folder_image(path))
    cached = read_split(tmp_path, True, dataset="folder")
    assert not decoded and torch.equal(cached[0], images) and torch.equal(cached[1], labels)
    changed = sorted((tmp_path / "train" / "bee").iterdir())[0]
    Image.fromarray(np.full((28, 28), 7, dtype=np.uint8)).save(changed)
    os.utime(changed, ns=(1, 1))  # a new mtime (and size), whatever the clock's resolution
    images, _ = read_split(tmp_path, True, dataset="folder")
    assert len(decoded) == 8 and (images[4] == 7).all()  # after the 4 ants, bee's first
    (tmp_path / "decoded_train.pt").write_bytes(b"cut")  # a broken cache is decoded anew
    assert torch.equal(read_split(tmp_path, True, dataset="folder")[0], images)
    assert len(decoded) == 16 and not list(tmp_path.glob(".decoded_*"))  # no temporary left


REAL_MNIST_RAW = REPO_DIR.parent / "shared" / "mnist" / "MNIST" / "raw"
real_data = pytest.mark.skipif(not (REAL_MNIST_RAW.is_dir() and REAL_FASHION_DIR.is_dir()),
                               reason=f"real MNIST and Fashion-MNIST not found at "
                                      f"{REAL_MNIST_RAW} and {REAL_FASHION_DIR}")


@real_data
@pytest.mark.parametrize("folder, named, found", [
    (REAL_MNIST_RAW, "fashion-mnist", "MNIST"),
    (REAL_FASHION_DIR, "mnist", "Fashion-MNIST"),
    (REAL_FASHION_DIR, "kmnist", "Fashion-MNIST"),
])
def test_another_datasets_files_are_named(folder, named, found):
    with pytest.raises(DatasetError, match=f"they are {found}'s test files") as error:
        read_split(folder, train=False, dataset=named)
    assert "\n" not in str(error.value)


@real_data
@pytest.mark.parametrize("folder, named", [(REAL_MNIST_RAW, "mnist"),
                                           (REAL_FASHION_DIR, "fashion-mnist")])
def test_the_real_files_match_their_checksums(folder, named):
    images, labels = read_split(folder, train=False, dataset=named)
    assert images.shape == (10000, 28, 28)


def test_a_failed_load_creates_no_folder_in_the_data_folder(tmp_path, offline):
    make_mnist(tmp_path)  # MNIST/raw/
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(DatasetError, match="it holds MNIST/raw/: --dataset mnist"):
        read_split(tmp_path, train=False, dataset="fashion-mnist")
    assert sorted(tmp_path.rglob("*")) == before


def test_a_16_bit_grey_image_is_divided_by_257():
    deep = Image.fromarray(np.array([[0, 128, 257 * 100, 65535]], dtype=np.uint16))
    assert from_16_bit(deep).tolist() == [[0, 0, 100, 255]] and from_16_bit(deep).dtype == np.uint8


def test_normalization_reads_the_training_split_only_when_none_is_stated(tmp_path):
    assert normalization("mnist", tmp_path / "nothing_here") == (0.1307, 0.3081)  # not read
    make_mnist(tmp_path, train_count=60, test_count=20, name="KMNIST")
    train_images = read_split(tmp_path, train=True, dataset="kmnist")[0].double() / 255
    assert normalization("kmnist", tmp_path) == (round(train_images.mean().item(), 4),
                                                 round(train_images.std().item(), 4))


def test_a_folder_that_cannot_be_written_is_decoded_on_every_load(tmp_path, monkeypatch):
    make_image_folder(tmp_path, ("ant", "bee"), 8, 4)
    monkeypatch.setattr(os, "replace", lambda *args: (_ for _ in ()).throw(PermissionError(13, "no")))
    images, _ = read_split(tmp_path, True, dataset="folder")
    assert images.shape[1:] == (28, 28) and not list(tmp_path.glob("*decoded*"))
