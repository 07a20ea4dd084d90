"""The pieces under every saved file: atomic writes, safe loading, random states."""
import errno
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from checkpointing import (CheckpointError, WriteError, atomic_write, load_checkpoint, load_training_state,
                           restore_rng_states, rng_states, save_checkpoint)


def leftovers(folder):
    return sorted(path.name for path in Path(folder).iterdir() if path.name.endswith(".tmp"))


def test_atomic_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "sub" / "file.bin"
    atomic_write(path, b"old")
    atomic_write(path, b"new content")
    assert path.read_bytes() == b"new content"
    assert leftovers(path.parent) == []
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def full_disk(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model.pth"
    path.write_bytes(b"previous good checkpoint")
    # The data is handed to the kernel, which finds no room when it must be stored.
    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(WriteError) as error:
        atomic_write(path, b"x" * 10_000)
    assert "No space left on device" in str(error.value) and str(path) in str(error.value)
    assert path.read_bytes() == b"previous good checkpoint"
    assert leftovers(tmp_path) == []


def test_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model.pth"
    path.write_bytes(b"previous")

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, b"new")
    assert path.read_bytes() == b"previous"
    assert leftovers(tmp_path) == []


class RunsCode:
    """Unpickling this object would create a file: the proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_file_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "sent_by_someone.pth"
    marker = tmp_path / "code_ran"
    torch.save({"model": {"w": torch.zeros(2)}, "payload": RunsCode(marker)}, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert "refused" in message and "(io.open)" in message and "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "missing"])
def test_broken_files_give_one_line(tmp_path, damage):
    good = tmp_path / "good.pth"
    save_checkpoint(good, {"weights": torch.randn(1000)})
    path = tmp_path / "broken.pth"
    data = good.read_bytes()
    content = {"truncated": data[:len(data) // 2], "garbage": b"not a checkpoint " * 20, "empty": b""}
    if damage != "missing":
        path.write_bytes(content[damage])
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    assert ("no checkpoint file" if damage == "missing" else "truncated or corrupt") in message


@pytest.mark.parametrize("content, expected", [
    ({"conv.weight": torch.zeros(1)}, "a model's state_dict"),
    ({"state_dict": {}, "epoch": 3}, "a checkpoint of another program"),
    ({"format": "mnist-center-loss-training-state", "version": 99}, "version 99"),
])
def test_files_that_are_no_training_state(tmp_path, content, expected):
    path = tmp_path / "other.pth"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=expected):
        load_training_state(path)


def test_random_states_survive_a_weights_only_round_trip(tmp_path):
    generator = torch.Generator()
    generator.manual_seed(5)
    torch.randperm(10, generator=generator)
    save_checkpoint(tmp_path / "rng.pth", rng_states(generator))

    def draws():
        return (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random(),
                torch.randperm(10, generator=generator).tolist())

    expected = draws()
    assert restore_rng_states(load_checkpoint(tmp_path / "rng.pth"), generator)
    assert draws() == expected
