"""Shared fixtures: small MNIST-format IDX files, written here and read back through
torchvision's real MNIST class by the code under test, and small folders of PNG images in
ImageFolder's layout; runs of the trainer on them."""
import gzip
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR))

from center_loss import CenterLoss  # noqa: E402

import train_mnist_original_center as trainer  # noqa: E402  (after the path is set)
from run_machinery.checkpointing import load_checkpoint  # noqa: E402
from run_machinery.training_state import load_training_state  # noqa: E402

REAL_MNIST_DIR = REPO_DIR.parent / "shared" / "mnist"


def write_idx(path, array, compress=False):
    """Write a uint8 array in the IDX format of the MNIST files (big-endian header)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def synthetic_digits(count, seed, num_classes=10):
    """Images whose digit is easy to learn: a bright bar at a place set by the label (up to
    12 classes)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % num_classes
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(count, 28, 28))
    for i, label in enumerate(labels):
        row = 2 + 2 * label
        images[i, row:row + 3, 4:24] = 255
    return images.astype(np.uint8), labels.astype(np.uint8)


def make_mnist(folder, train_count=300, test_count=100, layout="torchvision", compress=False,
               name="MNIST"):
    """Write the four IDX files. layout: 'torchvision' (folder/NAME/raw/, NAME being MNIST,
    FashionMNIST or KMNIST) or 'flat' (folder/)."""
    raw = Path(folder) / name / "raw" if layout == "torchvision" else Path(folder)
    raw.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for prefix, count, seed in (("train", train_count, 0), ("t10k", test_count, 1)):
        images, labels = synthetic_digits(count, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)
    return Path(folder)


# More than ten: the pictures' colours and the class count are not MNIST's.
FOLDER_CLASSES = ("ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen", "ibis", "jay", "koi")


def make_image_folder(folder, class_names=FOLDER_CLASSES, train_count=110, test_count=55):
    """Write synthetic_digits as 28x28 grayscale PNGs in ImageFolder's layout,
    folder/{train,test}/CLASS/NNNN.png (NNNN: the image's index in the split)."""
    for split, count, seed in (("train", train_count, 0), ("test", test_count, 1)):
        images, labels = synthetic_digits(count, seed, len(class_names))
        for name in class_names:
            (Path(folder) / split / name).mkdir(parents=True, exist_ok=True)
        for index, (image, label) in enumerate(zip(images, labels)):
            Image.fromarray(image).save(Path(folder) / split / class_names[label]
                                        / f"{index:04d}.png")
    return Path(folder)


@pytest.fixture(scope="session")
def image_folder_dir(tmp_path_factory):
    """A small folder dataset of 11 classes (110 training, 55 test PNGs)."""
    return make_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory):
    """A small MNIST (300 training, 100 test images) in torchvision's layout."""
    return make_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def fashion_dir(tmp_path_factory):
    """A small Fashion-MNIST in Debian's layout: the four .gz files in one folder."""
    return make_mnist(tmp_path_factory.mktemp("fashion"), layout="flat", compress=True)


@pytest.fixture
def offline(monkeypatch):
    """Make torchvision's downloads fail at once, as on a machine without network."""
    from torchvision.datasets import KMNIST, MNIST, FashionMNIST
    for dataset in (MNIST, FashionMNIST, KMNIST):
        monkeypatch.setattr(dataset, "mirrors", ["http://127.0.0.1:9/"])


def run_script(*args, script="train_mnist_original_center.py", timeout=120):
    """Run one of the repo's scripts in a subprocess, as a user would."""
    return subprocess.run([sys.executable, str(REPO_DIR / script), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO_DIR)


def output_flags(folder):
    """The flags that send every output of the trainer into `folder` (as strings)."""
    return ["--out_dir", str(folder)]


def trainer_flags(mnist_dir, folder, *flags):
    """A quick run of the trainer on the small MNIST, on the CPU, writing into `folder`."""
    return ["--dataset_dir", str(mnist_dir), "--batch_size", "64", "--lr", "0.01",
            "--device", "cpu", *output_flags(folder), *map(str, flags)]


@pytest.fixture(scope="session")
def two_epoch_run(mnist_dir, tmp_path_factory):
    """A 2-epoch run of the trainer on the small MNIST, from the command line:
    (CompletedProcess, output folder)."""
    out = tmp_path_factory.mktemp("run")
    result = run_script(*trainer_flags(mnist_dir, out, "--epochs", 2))
    return result, out


@pytest.fixture(scope="session")
def holdout_run(mnist_dir, tmp_path_factory):
    """A 3-epoch run with digits 8 and 9 held out: its output folder."""
    out = tmp_path_factory.mktemp("holdout")
    trainer.main(trainer_flags(mnist_dir, out, "--epochs", 3, "--holdout_classes", 9, 8))
    return out


@pytest.fixture(scope="session")
def arcface_run(mnist_dir, tmp_path_factory):
    """A 2-epoch run with the ArcFace head, its defaults recorded: its output folder."""
    out = tmp_path_factory.mktemp("arcface")
    trainer.main(trainer_flags(mnist_dir, out, "--epochs", 2, "--head", "arcface",
                               "--max_train_samples", 128))
    return out


@pytest.fixture(scope="session")
def fashion_run(fashion_dir, tmp_path_factory):
    """A 2-epoch Fashion-MNIST run with Shirt and Bag held out by name: its output folder."""
    out = tmp_path_factory.mktemp("fashion_run")
    trainer.main(trainer_flags(fashion_dir, out, "--epochs", 2, "--dataset", "fashion-mnist",
                               "--holdout_classes", "Shirt", "bag", "--max_train_samples", 128))
    return out


@pytest.fixture(scope="session")
def folder_run(image_folder_dir, tmp_path_factory):
    """A 2-epoch run on the image folder with koi and bee held out by name: its folder."""
    out = tmp_path_factory.mktemp("folder_run")
    trainer.main(trainer_flags(image_folder_dir, out, "--epochs", 2, "--dataset", "folder",
                               "--holdout_classes", "koi", "Bee"))
    return out


# 32 images in batches of 4: 8 steps an epoch, enough to stop in the middle of one.
SMALL_RUN = ["--max_train_samples", "32", "--max_test_samples", "16", "--batch_size", "4",
             "--lr", "0.01", "--device", "cpu"]


def small_run_flags(mnist_dir, folder, epochs=4):
    return ["--dataset_dir", str(mnist_dir), *SMALL_RUN, "--epochs", str(epochs),
            *output_flags(folder)]


@pytest.fixture
def one_thread():
    """One intra-op thread here (and OMP_NUM_THREADS=1 for subprocesses): the runs compared
    bit for bit all use the same, and such small steps run faster without handing work
    between threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def reference_run(mnist_dir, tmp_path_factory):
    """The folder of an uninterrupted 4-epoch small run, on one thread."""
    folder = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer.main(small_run_flags(mnist_dir, folder))
    finally:
        torch.set_num_threads(threads)
    return folder


def stop_message(argv):
    """Run the trainer's main() in this process; the message or status it stopped with."""
    with pytest.raises(SystemExit) as stop:
        trainer.main(argv)
    return stop.value.code


def assert_same_run(folder, reference, epochs=4):
    """Same weights, centres, optimizer states, metrics and per-epoch files as the reference."""
    state = load_training_state(folder / "training_state.pth")
    expected = load_training_state(reference / "training_state.pth")
    assert state["epoch"] == expected["epoch"] == epochs and state["partial_epoch"] is None
    # Every metric of every epoch, but the time it took.
    untimed = [[{k: v for k, v in record.items() if k not in ("seconds", "times")}
                for record in saved["history"]["records"]] for saved in (state, expected)]
    assert untimed[0] == untimed[1] and len(untimed[0]) == epochs
    assert_equal(state["history"]["test_features"], expected["history"]["test_features"])
    assert_equal(load_checkpoint(folder / "test_features.pt"),
                 load_checkpoint(reference / "test_features.pt"))
    for part in ("modules", "optimizers"):
        for name in expected[part]:
            assert_equal(state[part][name], expected[part][name])
    for epoch in range(1, epochs + 1):
        assert_equal(load_checkpoint(folder / "model" / f"epoch_{epoch:03d}.pth"),
                     load_checkpoint(reference / "model" / f"epoch_{epoch:03d}.pth"))
        assert (folder / "visual" / f"epoch_{epoch:03d}.png").read_bytes() == \
               (reference / "visual" / f"epoch_{epoch:03d}.png").read_bytes()


def assert_equal(value, expected):
    if isinstance(expected, dict):
        assert value.keys() == expected.keys()
        for key in expected:
            assert_equal(value[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert len(value) == len(expected)
        for item, expected_item in zip(value, expected):
            assert_equal(item, expected_item)
    elif isinstance(expected, torch.Tensor):
        assert torch.equal(value, expected)
    else:
        assert value == expected


def interrupt_at_training_step(monkeypatch, step):
    """Send this process SIGINT during the `step`-th training step from the run's start."""
    forward = CenterLoss.forward
    calls = []

    def forward_and_signal(self, label, feat, *rest):
        if torch.is_grad_enabled():  # a training step, not a test pass
            calls.append(None)
            if len(calls) == step:
                os.kill(os.getpid(), signal.SIGINT)
        return forward(self, label, feat, *rest)

    monkeypatch.setattr(CenterLoss, "forward", forward_and_signal)


def snapshot(folder):
    """Every file under `folder` and its bytes: a run's files, to check that they stayed
    byte-identical."""
    return {path.relative_to(folder): path.read_bytes()
            for path in sorted(Path(folder).rglob("*")) if path.is_file()}
