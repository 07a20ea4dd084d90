import contextlib
import io
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import export
from conftest import REPO_DIR
from run_machinery.checkpoint_run import load_test_split, open_checkpoint
from run_machinery.datasets import read_split

onnxruntime = pytest.importorskip("onnxruntime")  # requirements.txt installs it, as CI does

DOC = REPO_DIR / "docs" / "export-onnx.md"


@pytest.fixture(scope="module")
def exported(two_epoch_run, tmp_path_factory):
    """export.py run once on the 2-epoch run's last checkpoint: (its result, what it printed,
    the checkpoint)."""
    _, out = two_epoch_run
    checkpoint = out / "model" / "epoch_002.pth"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        # into a folder not there yet: made, as every command makes an output's folders
        result = export.main([str(checkpoint), "--onnx",
                              str(tmp_path_factory.mktemp("onnx") / "new" / "model.onnx")])
    return result, printed.getvalue(), checkpoint


def relative_difference(output, reference):
    """As export.py measures it: the largest absolute difference over the largest magnitude."""
    return np.abs(output - reference).max() / np.abs(reference).max()


def test_export_writes_a_file_that_reproduces_pytorch(exported):
    result, printed, _ = exported
    assert (result["onnx"].endswith("model.onnx")
            and list(map(str, Path(result["onnx"]).parent.iterdir())) == [result["onnx"]])
    for name in ("feature", "log_probs"):
        assert result["differences"][name]["relative"] <= 1e-4
        assert re.search(rf"{name}: largest difference \S+ absolute, \S+ relative", printed)
    assert "on 100 test images, in batches of 100 and 1" in printed  # the small test split
    assert f"Wrote {result['onnx']}" in printed


@pytest.mark.parametrize("size", [1, 3, 100])
def test_any_batch_size_runs_and_matches_pytorch(exported, mnist_dir, size):
    result, _, checkpoint = exported
    images = load_test_split(mnist_dir, "cpu", size).images
    with torch.no_grad():
        expected = [output.numpy() for output in open_checkpoint(checkpoint).model(images)]
    session = onnxruntime.InferenceSession(result["onnx"], providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 1, 28, 28]
    feature, log_probs = session.run(None, {"image": images.numpy()})
    assert feature.shape == (size, 2) and log_probs.shape == (size, 10)
    assert relative_difference(feature, expected[0]) <= 1e-4
    assert relative_difference(log_probs, expected[1]) <= 1e-4


def test_the_metadata_holds_the_normalisation_and_the_class_names(exported):
    result, _, _ = exported
    session = onnxruntime.InferenceSession(result["onnx"], providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta == result["metadata"]
    assert (float(meta["mean"]), float(meta["std"])) == (0.1307, 0.3081)  # MNIST's, the run's
    assert json.loads(meta["class_names"]) == [str(digit) for digit in range(10)]
    assert (meta["dataset"], meta["head"], json.loads(meta["feat_dim"]),
            json.loads(meta["holdout_classes"])) == ("mnist", "softmax", 2, [])


def test_the_docs_lines_run_the_file_without_pytorch(exported, mnist_dir, monkeypatch):
    result, _, checkpoint = exported
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert len(blocks) == 1 and "import torch" not in blocks[0]
    monkeypatch.chdir(Path(result["onnx"]).parent)  # the doc's file is model.onnx
    images, _ = read_split(mnist_dir, train=False)
    names = {"images": images.numpy()}
    exec(blocks[0], names)
    with torch.no_grad():
        expected = open_checkpoint(checkpoint).model(load_test_split(mnist_dir, "cpu").images)
    assert relative_difference(names["feature"], expected[0].numpy()) <= 1e-4
    assert relative_difference(names["log_probs"], expected[1].numpy()) <= 1e-4
    assert names["predicted"] == [str(int(digit)) for digit in expected[1].argmax(1)]


def stop_line(argv):
    """The one line export.py stopped with."""
    with pytest.raises(SystemExit) as stop:
        export.main(argv)
    assert isinstance(stop.value.code, str) and "\n" not in stop.value.code
    return stop.value.code


def test_bad_inputs_stop_in_one_line_naming_the_file_and_write_nothing(two_epoch_run, tmp_path,
                                                                       tmp_path_factory, offline):
    _, out = two_epoch_run
    # Outside tmp_path: torchvision makes MNIST/raw/ in it for the download it tries.
    no_data = tmp_path_factory.mktemp("no_data")
    checkpoint = str(out / "model" / "epoch_002.pth")
    alone = tmp_path / "alone.pth"  # a checkpoint away from its run.json
    shutil.copy(checkpoint, alone)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    target = str(tmp_path / "model.onnx")
    before = sorted(tmp_path.iterdir())
    cases = [
        ([str(tmp_path / "missing.pth"), "--onnx", target], "missing.pth", "no checkpoint file"),
        ([str(garbage), "--onnx", target], "garbage.pth", "truncated or corrupt"),
        ([str(alone), "--onnx", target], "alone.pth", "pass --dataset"),
        ([str(alone), "--onnx", target, "--dataset", "mnist", "--dataset_dir",
          str(no_data)], str(no_data), "could not be loaded"),
        ([checkpoint, "--onnx", str(garbage / "model.onnx")], "garbage.pth",
         "is not a folder"),  # a missing folder is made, but a file is none
        ([checkpoint, "--onnx", str(tmp_path)], str(tmp_path), "it is a folder"),
        ([str(alone), "--onnx", str(alone), "--dataset", "mnist"], "alone.pth",
         "which this command reads"),
        ([checkpoint, "--onnx", target, "--check_images", "1"], "--check_images",
         "at least 2"),
    ]
    for argv, named, reason in cases:
        message = stop_line(argv)
        assert named in message and reason in message, message
        assert sorted(tmp_path.iterdir()) == before, argv


def test_without_onnxruntime_it_says_how_to_install_it(two_epoch_run, tmp_path, monkeypatch):
    _, out = two_epoch_run
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # an import of it now fails
    message = stop_line([str(out / "model" / "epoch_002.pth"), "--onnx",
                         str(tmp_path / "model.onnx")])
    assert "onnxruntime" in message and "pip install" in message
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_differs_from_pytorch_is_deleted(two_epoch_run, tmp_path, monkeypatch):
    _, out = two_epoch_run
    run = onnxruntime.InferenceSession.run

    def run_off_by_a_little(self, *args, **kwargs):
        return [output + 0.01 for output in run(self, *args, **kwargs)]

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", run_off_by_a_little)
    target = tmp_path / "model.onnx"
    message = stop_line([str(out / "model" / "epoch_002.pth"), "--onnx", str(target)])
    assert f"{target} not written" in message and "more than the 1e-04 allowed" in message
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary copy


def test_a_folder_run_exports_with_its_class_names_and_normalisation(folder_run, tmp_path):
    result = export.main([str(folder_run / "model" / "epoch_002.pth"), "--onnx",
                          str(tmp_path / "folder.onnx"), "--check_images", "20"])
    run = json.loads((folder_run / "run.json").read_text())
    metadata = result["metadata"]
    assert (json.loads(metadata["mean"]), json.loads(metadata["std"])) == (run["mean"], run["std"])
    assert json.loads(metadata["class_names"]) == [run["class_names"][label]
                                                   for label in run["classes"]]
    assert json.loads(metadata["holdout_classes"]) == ["bee", "koi"]
    assert metadata["dataset"] == "folder" and result["differences"]["feature"]["relative"] <= 1e-4
