import json
import math
import sys

import pytest
import torch

from margin_heads import Head
from mnist_net import Net

from run_machinery.checkpoint_run import CheckpointRun
from run_machinery.datasets import class_names
from run_machinery.errors import UserError
from run_machinery.onnx_export import (
    TOLERANCE,
    check_differences,
    largest_differences,
    model_metadata,
    require_packages,
)

onnx = pytest.importorskip("onnx")  # requirements.txt installs it, as CI does
pytest.importorskip("onnxruntime")


def test_a_missing_package_is_named_with_the_command_that_installs_it(monkeypatch):
    for name in ("onnxscript", "onnxruntime"):
        monkeypatch.setitem(sys.modules, name, None)  # an import of it now fails
    with pytest.raises(UserError) as error:
        require_packages()
    assert str(error.value) == ("the ONNX export needs onnxscript and onnxruntime, not "
                                "installed: pip install -r requirements.txt (or pip install "
                                "onnxscript onnxruntime)")


def test_the_metadata_names_each_column_of_the_log_probabilities():
    # Fashion-MNIST with Shirt (6) and Bag (8) held out: eight columns, 3-D features.
    model = Net(num_classes=8, feat_dim=3)
    checkpoint = CheckpointRun(model, None, [6, 8], [0, 1, 2, 3, 4, 5, 7, 9],
                               Head("arcface", model.ip2.weight), "fashion-mnist", "data",
                               class_names("fashion-mnist"), (0.286, 0.353), {})
    metadata = model_metadata(checkpoint, 0.286, 0.353)
    assert metadata == {
        "dataset": "fashion-mnist", "mean": "0.286", "std": "0.353",
        "class_names": json.dumps(["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                   "Sandal", "Sneaker", "Ankle boot"]),
        "holdout_classes": json.dumps(["Shirt", "Bag"]), "head": "arcface", "feat_dim": "3"}


def flatten_twice(path):
    """An ONNX file whose outputs, feature and log_probs, are both its input image flattened."""
    helper = onnx.helper
    image = helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["batch", 1, 2, 2])
    outputs = [helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["batch", 4])
               for name in ("feature", "log_probs")]
    nodes = [helper.make_node("Flatten", ["image"], [name]) for name in ("feature", "log_probs")]
    graph = helper.make_graph(nodes, "flatten_twice", [image], outputs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def test_largest_differences_over_each_batch_size(tmp_path):
    flatten_twice(tmp_path / "model.onnx")
    images = torch.full((3, 1, 2, 2), 1.5)
    images[2, 0, 0, 0] = -3.0

    def model(batch):  # the feature as the file's; the log-probabilities off by 0.5
        return batch.flatten(1), batch.flatten(1) + 0.5

    differences = largest_differences(tmp_path / "model.onnx", model, images, (3, 1))
    # log_probs, 0.5 off everywhere: 0.5 / |-3 + 0.5| = 0.2 relative in the batch of 3, and
    # 0.5 / (1.5 + 0.5) = 0.25 in the batch of the first image alone.
    assert differences == {"feature": {"absolute": 0.0, "relative": 0.0},
                           "log_probs": {"absolute": 0.5, "relative": 0.25}}


def test_largest_differences_keep_a_nan(tmp_path):
    flatten_twice(tmp_path / "model.onnx")

    def model(batch):
        return batch.flatten(1), torch.full_like(batch.flatten(1), math.nan)

    differences = largest_differences(tmp_path / "model.onnx", model, torch.ones(2, 1, 2, 2),
                                      (2, 1))
    assert math.isnan(differences["log_probs"]["relative"])


@pytest.mark.parametrize("relative, refused", [(TOLERANCE, False), (2 * TOLERANCE, True),
                                               (math.nan, True)])
def test_differences_beyond_the_tolerance_or_nan_are_refused(relative, refused):
    differences = {"feature": {"absolute": 0.0, "relative": 0.0},
                   "log_probs": {"absolute": relative, "relative": relative}}
    if refused:
        with pytest.raises(UserError, match=r"^model.onnx not written: onnxruntime's log_probs"):
            check_differences(differences, "model.onnx")
    else:
        check_differences(differences, "model.onnx")
