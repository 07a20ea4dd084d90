"""Shared fixtures: small MNIST-format IDX files, written here and read back through
torchvision's real MNIST class by the code under test."""
import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR))

REAL_MNIST_DIR = REPO_DIR.parent / "shared" / "mnist"


def write_idx(path, array, compress=False):
    """Write a uint8 array in the IDX format of the MNIST files (big-endian header)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def synthetic_digits(count, seed):
    """Images whose digit is easy to learn: a bright bar at a place set by the label."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(count, 28, 28))
    for i, label in enumerate(labels):
        row = 2 + 2 * label
        images[i, row:row + 3, 4:24] = 255
    return images.astype(np.uint8), labels.astype(np.uint8)


def make_mnist(folder, train_count=300, test_count=100, layout="torchvision", compress=False):
    """Write the four IDX files. layout: 'torchvision' (folder/MNIST/raw/) or 'flat' (folder/)."""
    raw = Path(folder) / "MNIST" / "raw" if layout == "torchvision" else Path(folder)
    raw.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for prefix, count, seed in (("train", train_count, 0), ("t10k", test_count, 1)):
        images, labels = synthetic_digits(count, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)
    return Path(folder)


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory):
    """A small MNIST (300 training, 100 test images) in torchvision's layout."""
    return make_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture
def offline(monkeypatch):
    """Make torchvision's download fail at once, as on a machine without network."""
    from torchvision.datasets import MNIST
    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])


def run_script(*args, script="train_mnist_original_center.py", timeout=120):
    """Run one of the repo's scripts in a subprocess, as a user would."""
    return subprocess.run([sys.executable, str(REPO_DIR / script), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO_DIR)


def output_flags(folder):
    """Flags that send every output of the trainer into `folder`."""
    return ["--model_path_temp", folder / "model" / "epoch_{}.pth",
            "--vis_img_path_temp", folder / "visual" / "epoch_{}.png",
            "--history_path", folder / "history.csv"]


@pytest.fixture(scope="session")
def two_epoch_run(mnist_dir, tmp_path_factory):
    """A 2-epoch run of the trainer on the small MNIST: (CompletedProcess, output folder)."""
    out = tmp_path_factory.mktemp("run")
    result = run_script("--dataset_dir", mnist_dir, "--epochs", 2, "--batch_size", 64, "--lr", 0.01,
                        "--device", "cpu", *output_flags(out))
    return result, out
