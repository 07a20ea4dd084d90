"""Distributed data-parallel training under torchrun, on CPU with Gloo."""
import csv
import subprocess
import sys

import pytest
import torch

from mnist_net import Net

import train_mnist_original_center as trainer
from conftest import REPO_DIR, make_mnist, output_flags

DRIVER = str(REPO_DIR / "tests" / "ddp_driver.py")
# 1024 images in global batches of 128: 8 steps an epoch, 16 over the 2 epochs.
FLAGS = ["--epochs", "2", "--batch_size", "128", "--lr", "0.01", "--device", "cpu", "--seed", "4"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_mnist(tmp_path_factory.mktemp("mnist1024"), train_count=1024, test_count=200)


def torchrun(record_dir, flags, fail_rank=None, timeout=300):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", DRIVER, str(record_dir),
               *([str(fail_rank)] if fail_rank is not None else []), "--", *map(str, flags)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO_DIR)


def history(folder):
    with open(folder / "history.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def two_ranks(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    result = torchrun(out, ["--dataset_dir", data, *FLAGS, *output_flags(out)])
    assert result.returncode == 0, result.stdout + result.stderr
    return result, out


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    trainer.main(["--dataset_dir", str(data), *FLAGS, *output_flags(out)])
    return out


def test_ranks_hold_identical_weights_and_centres(two_ranks):
    _, out = two_ranks
    rank0, rank1 = (torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in (0, 1))
    for name, tensor in rank0["model"].items():
        assert torch.equal(tensor, rank1["model"][name]), name
    assert torch.equal(rank0["centers"], rank1["centers"])


def test_only_rank_0_prints_and_writes(two_ranks):
    result, out = two_ranks
    assert result.stdout.count("Epoch:   1,") == 1
    assert "Start training on cpu x 2 processes: 1024 training and 200 test images" in result.stdout
    assert len(history(out)) == 2
    # A plain state_dict: no `module.` prefix, loads without any distributed set-up.
    state = torch.load(out / "model" / "epoch_002.pth", weights_only=True)
    Net().load_state_dict(state, strict=True)
    rank0 = torch.load(out / "rank0.pt", weights_only=True)
    assert all(torch.equal(state[name], rank0["model"][name]) for name in state)


def test_two_ranks_follow_the_single_process_run(two_ranks, one_process):
    _, out = two_ranks
    for distributed_row, single_row in zip(history(out), history(one_process), strict=True):
        for column in ("train_loss", "train_acc", "test_loss", "test_acc", "train_center_loss"):
            assert float(distributed_row[column]) == pytest.approx(float(single_row[column]),
                                                                   rel=1e-4, abs=1e-4), \
                (distributed_row["epoch"], column)
    final = torch.load(out / "model" / "epoch_002.pth", weights_only=True)
    single = torch.load(one_process / "model" / "epoch_002.pth", weights_only=True)
    for name in final:
        assert torch.allclose(final[name], single[name], rtol=1e-4, atol=1e-4), name


def test_a_failing_rank_ends_every_rank(data, tmp_path):
    result = torchrun(tmp_path, ["--dataset_dir", data, *FLAGS, *output_flags(tmp_path)],
                      fail_rank=1, timeout=240)
    assert result.returncode != 0
    assert "injected failure on rank 1" in result.stderr
    assert not (tmp_path / "rank0.pt").exists()  # rank 0 did not finish training alone


def test_nan_stops_every_rank(data, tmp_path):
    result = torchrun(tmp_path, ["--dataset_dir", data, *FLAGS, "--lr", "1e8",
                                 *output_flags(tmp_path)], timeout=240)
    assert result.returncode != 0
    assert "became NaN or infinite in epoch 1" in result.stderr


def test_pk_batches_and_the_triplet_loss_under_two_ranks(data, tmp_path):
    # P x K = 4 x 16 a global batch: each rank draws 8 images of each of the 4 classes.
    result = torchrun(tmp_path, ["--dataset_dir", data, *FLAGS, "--epochs", "1",
                                 "--classes_per_batch", "4", "--images_per_class", "16",
                                 "--triplet_weight", "1", *output_flags(tmp_path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "train triplet: " in result.stdout
    (row,) = history(tmp_path)
    assert 0 < float(row["train_triplet_loss"]) < float(row["train_loss"])
    rank0, rank1 = (torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1))
    for name, tensor in rank0["model"].items():
        assert torch.equal(tensor, rank1["model"][name]), name
