"""The pieces under every saved file: atomic writes, safe loading, fitting a state_dict."""
import errno
import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch

from mnist_net import Net

from run_machinery.checkpointing import (
    CheckpointError,
    WriteError,
    atomic_write,
    load_checkpoint,
    load_module_state,
    save_checkpoint,
)


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


def test_a_failed_check_keeps_the_previous_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous")
    checked = []

    def refuse(temp_path):
        checked.append((Path(temp_path).parent, Path(temp_path).read_bytes()))
        raise WriteError("refused")

    with pytest.raises(WriteError, match="refused"):
        atomic_write(path, b"new", check=refuse)
    assert checked == [(tmp_path, b"new")]  # the whole file, in the same folder
    assert path.read_bytes() == b"previous" and leftovers(tmp_path) == []


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
    content = {"truncated": data[:len(data) // 2], "garbage": b"not a checkpoint " * 20,
               "empty": b""}
    if damage != "missing":
        path.write_bytes(content[damage])
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    assert ("no checkpoint file" if damage == "missing" else "truncated or corrupt") in message


def test_load_module_state_names_the_layer_that_does_not_fit():
    state = Net().state_dict()
    state["ip1.weight"] = torch.zeros(2, 10)
    with pytest.raises(CheckpointError, match=r"the checkpoint's model does not fit: "
                                              r"ip1.weight has shape \(2, 10\)"):
        load_module_state(Net(), state, "model")
    del state["ip1.weight"]
    with pytest.raises(CheckpointError, match=r"missing: \['ip1.weight'\]"):
        load_module_state(Net(), state, "model")


def test_a_plain_pickle_is_refused_without_torch_warnings(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))  # pickle's protocol, not torch's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError, match="truncated or corrupt") as error:
            load_checkpoint(path)
    assert [str(warning.message) for warning in caught] == [] and "\n" not in str(error.value)
