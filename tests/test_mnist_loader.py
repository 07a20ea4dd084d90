import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms
from torchvision.datasets import MNIST

from conftest import FOLDER_CLASSES, REPO_DIR, make_image_folder, make_mnist
from mnist_loader import (DATASETS, DatasetError, class_names, folder_image, load_dataset,
                          read_split)

REFERENCE = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])


def reference_batch(dataset, indices):
    """What the article's DataLoader gives for these indices: PIL -> ToTensor -> Normalize."""
    images = torch.stack([REFERENCE(dataset[i][0]) for i in indices.tolist()])
    labels = torch.tensor([dataset[i][1] for i in indices.tolist()])
    return images, labels


def test_batches_equal_totensor_normalize(mnist_dir):
    train_loader, test_loader, classes = load_dataset(mnist_dir, 64, 50, seed=3)
    assert classes == tuple(range(10))
    reference = MNIST(mnist_dir, train=True)
    # The same permutation the loader draws for its first epoch.
    order = torch.randperm(300, generator=torch.Generator().manual_seed(3))
    for batch, (images, labels) in enumerate(train_loader):
        expected_images, expected_labels = reference_batch(reference,
                                                           order[batch * 64:(batch + 1) * 64])
        assert images.dtype == torch.float32 and images.shape == expected_images.shape
        assert torch.equal(images, expected_images)
        assert torch.equal(labels, expected_labels)
    assert len(train_loader) == 5  # ceil(300 / 64)

    reference_test = MNIST(mnist_dir, train=False)
    images, labels = next(iter(test_loader))
    assert torch.equal((images, labels)[0], reference_batch(reference_test, torch.arange(50))[0])
    assert len(test_loader) == 2


def test_shuffle_is_seeded_and_changes_every_epoch(mnist_dir):
    first = [labels for _, labels in load_dataset(mnist_dir, 300, seed=5)[0]]
    loader = load_dataset(mnist_dir, 300, seed=5)[0]
    epoch1 = next(iter(loader))[1]
    epoch2 = next(iter(loader))[1]
    assert torch.equal(first[0], epoch1)
    assert not torch.equal(epoch1, epoch2)
    assert torch.equal(epoch1.sort().values, epoch2.sort().values)


def test_max_samples_keep_the_first_images(mnist_dir):
    train_loader, test_loader, _ = load_dataset(mnist_dir, max_train_samples=30, max_test_samples=7)
    assert train_loader.num_samples == 30 and test_loader.num_samples == 7
    reference = MNIST(mnist_dir, train=False)
    assert torch.equal(test_loader.labels, reference.targets[:7])


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


def test_the_loaders_know_their_normalisation_and_classes(mnist_dir):
    train_loader, test_loader, classes = load_dataset(mnist_dir, 32, holdout_classes=[3])
    images, labels = next(iter(test_loader))
    pixels = train_loader.pixels(images)
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    assert (test_loader.class_of_label.tolist() == [0, 1, 2, -1, 3, 4, 5, 6, 7, 8]
            and classes == (0, 1, 2, 4, 5, 6, 7, 8, 9))


def test_ranks_split_each_global_batch(mnist_dir):
    from mnist_loader import TensorLoader
    single = load_dataset(mnist_dir, 64, seed=9)[0]
    ranks = []
    for rank in range(3):
        generator = torch.Generator().manual_seed(9)
        ranks.append(TensorLoader(single.images, single.labels, 66, shuffle=True,
                                  generator=generator, rank=rank, world_size=3))
    assert ({loader.num_samples for loader in ranks} == {100}
            and {len(loader) for loader in ranks} == {5})
    order = torch.randperm(300, generator=torch.Generator().manual_seed(9))
    batches = [list(loader) for loader in ranks]
    for step in range(5):
        together = torch.cat([batches[rank][step][1] for rank in range(3)])
        # The ranks' batches of 22 make up the single-process batch of 66 of that step.
        expected = single.labels[order[step * 66:(step + 1) * 66]]
        assert sorted(together.tolist()) == sorted(expected.tolist())
    seen = torch.cat([torch.cat([b[0].flatten(1) for b in rank_batches])
                      for rank_batches in batches])
    assert torch.unique(seen, dim=0).size(0) == 300  # disjoint shards covering the epoch


def test_unshuffled_parts_cover_the_split(mnist_dir):
    from mnist_loader import TensorLoader
    test_loader = load_dataset(mnist_dir, 64, 64)[1]
    parts = [TensorLoader(test_loader.images, test_loader.labels, 8, rank=rank, world_size=3)
             for rank in range(3)]
    labels = torch.cat([torch.cat([batch[1] for batch in part]) for part in parts])
    assert torch.equal(labels, test_loader.labels)


def test_holdout_removes_digits_from_the_training_split(mnist_dir):
    train_loader, test_loader, classes = load_dataset(mnist_dir, holdout_classes=[8, 9])
    assert classes == tuple(range(8))
    assert not torch.isin(train_loader.labels, torch.tensor([8, 9])).any()
    assert torch.isin(test_loader.labels, torch.tensor([8, 9])).any()
    assert train_loader.num_samples == 240  # 300 images, every digit 30 times


def test_digit_to_class_skips_the_held_out_digits():
    from mnist_loader import label_to_class
    assert label_to_class((0, 1, 3), "cpu").tolist() == [0, 1, -1, 2, -1, -1, -1, -1, -1, -1]
    assert label_to_class((0, 2), "cpu", num_labels=3).tolist() == [0, -1, 1]


def test_moving_a_loader_leaves_the_original_as_it_was(mnist_dir):
    train_loader, test_loader, _ = load_dataset(mnist_dir, 64, seed=4)
    assert train_loader.to("cpu") is train_loader
    moved = test_loader.to("meta")  # a device of its own, without an accelerator
    assert moved.images.device.type == "meta" and moved.num_samples == test_loader.num_samples
    assert test_loader.images.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_loader_moved_to_cuda_shuffles_as_one_made_there(mnist_dir):
    moved = load_dataset(mnist_dir, 64, seed=4)[0].to("cuda")
    made_there = load_dataset(mnist_dir, 64, seed=4, device="cuda")[0]
    for (images, labels), (expected_images, expected_labels) in zip(moved, made_there, strict=True):
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


# PK batches: P classes x K images of each.

def pk_loader(mnist_dir, p, k, seed=0, **kwargs):
    return load_dataset(mnist_dir, 64, seed=seed, classes_per_batch=p, images_per_class=k,
                        **kwargs)[0]


@pytest.mark.parametrize("p, k", [(4, 7), (2, 30), (9, 10)])
def test_pk_batches_hold_p_classes_of_k_distinct_images(mnist_dir, p, k):
    train_loader, test_loader, _ = load_dataset(mnist_dir, 64, 50, seed=2, holdout_classes=[3],
                                                classes_per_batch=p, images_per_class=k)
    steps = 270 // (p * k)  # 300 images less the 30 threes
    assert (len(train_loader), train_loader.batch_size, train_loader.num_samples) == \
           (steps, p * k, steps * p * k)
    batches = list(train_loader)
    assert len(batches) == steps
    for images, labels in batches:
        groups = labels.view(p, k)  # class by class
        assert (groups == groups[:, :1]).all() and groups[:, 0].unique().numel() == p
        assert 3 not in labels.tolist()
        assert torch.unique(images.flatten(1), dim=0).size(0) == p * k  # distinct images
    assert test_loader.classes_per_batch is None and len(test_loader) == 2  # never PK


def test_pk_takes_each_class_in_its_own_order_round_again(mnist_dir):
    loader = pk_loader(mnist_dir, 1, 20, seed=1)  # 15 steps of one class: some come twice
    batches = [(labels[0].item(), images.flatten(1)) for images, labels in loader]
    twice = 0
    for digit in range(10):
        picks = [images for label, images in batches if label == digit]
        if len(picks) >= 2:
            twice += 1
            # The second pick goes on where the first stopped: the 10 left, then 10 again.
            assert torch.unique(torch.cat(picks[:2]), dim=0).size(0) == 30
            assert torch.equal(picks[1][10:], picks[0][:10])
    assert twice


def test_pk_plan_is_seeded_and_changes_every_epoch(mnist_dir):
    first = [labels for _, labels in pk_loader(mnist_dir, 4, 5, seed=5)]
    loader = pk_loader(mnist_dir, 4, 5, seed=5)
    epoch1, epoch2 = ([labels for _, labels in loader] for _ in range(2))
    other = [labels for _, labels in pk_loader(mnist_dir, 4, 5, seed=6)]
    assert len(first) == 15
    assert all(torch.equal(a, b) for a, b in zip(first, epoch1, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(epoch1, epoch2, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_pk_ranks_split_each_global_batch(mnist_dir):
    from mnist_loader import TensorLoader
    single = pk_loader(mnist_dir, 4, 6, seed=9)
    ranks = [TensorLoader(single.images, single.labels, 64, shuffle=True,
                          generator=torch.Generator().manual_seed(9), rank=rank, world_size=2,
                          classes_per_batch=4, images_per_class=6) for rank in range(2)]
    assert all((len(loader), loader.batch_size, loader.num_samples) == (12, 12, 144)
               for loader in ranks)
    batches = [list(loader) for loader in ranks]
    for step, (images, labels) in enumerate(single):
        # Rank r holds items r, r + 2, ... of the single-process batch of that step.
        together = torch.stack([batches[rank][step][0] for rank in range(2)], dim=1)
        assert torch.equal(together.flatten(0, 1), images)
        assert torch.equal(torch.stack([batches[rank][step][1] for rank in range(2)],
                                       dim=1).flatten(), labels)


def test_pk_resumes_mid_epoch(mnist_dir):
    import itertools
    loader = pk_loader(mnist_dir, 3, 8, seed=4)
    next(iter(loader))  # the second epoch's plan is drawn from a used generator
    state = loader.generator.get_state()
    epoch = list(loader)
    loader.generator.set_state(state)
    rest = list(itertools.islice(loader, 3, None))
    assert len(rest) == len(epoch) - 3 == 9
    for (images, labels), (expected_images, expected_labels) in zip(rest, epoch[3:]):
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


@pytest.mark.parametrize("p, k, kwargs, fragment", [
    (4, None, {}, "go together"),
    (None, 4, {}, "go together"),
    (0, 4, {}, "--classes_per_batch 0 must be from 1 to the 10 classes"),
    (10, 4, {"holdout_classes": [3]}, "--classes_per_batch 10 must be from 1 to the 9 classes"),
    (4, 0, {}, "--images_per_class 0 must be from 1 to 30"),
    (4, 31, {}, "--images_per_class 31 must be from 1 to 30"),
    (4, 7, {"world_size": 3}, "28 images do not split evenly among 3 processes"),
])
def test_bad_pk_sizes_are_refused(mnist_dir, p, k, kwargs, fragment):
    with pytest.raises(ValueError) as error:
        pk_loader(mnist_dir, p, k, **kwargs)
    message = str(error.value)
    assert fragment in message and "\n" not in message
    assert "--classes_per_batch" in message or "--images_per_class" in message


def test_pk_needs_a_shuffled_loader(mnist_dir):
    from mnist_loader import TensorLoader
    test_loader = load_dataset(mnist_dir, 64, 64)[1]
    with pytest.raises(ValueError, match="--classes_per_batch and --images_per_class only"):
        TensorLoader(test_loader.images, test_loader.labels, 8, classes_per_batch=2,
                     images_per_class=2)


def test_without_pk_the_shuffle_is_as_before(mnist_dir):
    loader = load_dataset(mnist_dir, 64, seed=7, classes_per_batch=None,
                          images_per_class=None)[0]
    generator = torch.Generator().manual_seed(7)
    assert (len(loader), loader.batch_size, loader.num_samples) == (5, 64, 300)
    for _ in range(2):
        order = torch.randperm(300, generator=generator)  # the same draws, epoch after epoch
        batches = list(loader)
        for step, (_, labels) in enumerate(batches):
            assert torch.equal(labels, loader.labels[order[step * 64:(step + 1) * 64]])
    assert torch.equal(loader.generator.get_state(), generator.get_state())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_pk_loader_moved_to_cuda_draws_as_one_made_there(mnist_dir):
    moved = pk_loader(mnist_dir, 4, 7, seed=4).to("cuda")
    made_there = pk_loader(mnist_dir, 4, 7, seed=4, device="cuda")
    for (images, labels), (expected_images, expected_labels) in zip(moved, made_there, strict=True):
        assert images.device.type == "cuda"
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


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
    import mnist_loader
    make_image_folder(tmp_path, ("ant", "bee"), 8, 4)
    images, labels = read_split(tmp_path, True, dataset="folder")
    assert (tmp_path / "decoded_train.pt").is_file()
    decoded = []
    monkeypatch.setattr(mnist_loader, "folder_image",
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
