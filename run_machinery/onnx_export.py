"""A checkpoint's Net as an ONNX file that runs without PyTorch (for export.py): exported
with a dynamic batch size, with what its user needs beside it (the normalisation of its
input, the names of its classes) in its metadata, and put in place only once onnxruntime
reproduces PyTorch on test images.
"""
import importlib
import json

import numpy as np
import torch

from .checkpointing import atomic_write
from .errors import UserError

INPUT_NAME = "image"
OUTPUT_NAMES = ("feature", "log_probs")
# The exporter needs the first two; the check of the file, the third.
PACKAGES = ("onnx", "onnxscript", "onnxruntime")
# The most an output of the file may differ from PyTorch's, relative to that output's largest
# magnitude: float32 kernels that merely round differently stay near 1e-7.
TOLERANCE = 1e-4


def require_packages():
    """UserError, with the command that installs them, when a package of PACKAGES is missing."""
    missing = []
    for name in PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UserError(f"the ONNX export needs {' and '.join(missing)}, not installed: "
                        f"pip install -r requirements.txt (or pip install {' '.join(missing)})")


def model_metadata(checkpoint, mean, std):
    """The metadata_props of the ONNX file of the CheckpointRun `checkpoint`, whose input is
    normalised by `mean` and `std`: the names of the classes of the log-probabilities' columns,
    in order, and the run's dataset, head, feature width and held-out classes; numbers and
    lists as JSON."""
    names = checkpoint.class_names
    return {"dataset": checkpoint.dataset,
            "mean": json.dumps(mean),
            "std": json.dumps(std),
            "class_names": json.dumps([names[label] for label in checkpoint.classes]),
            "holdout_classes": json.dumps([names[label] for label in checkpoint.holdout_classes]),
            "head": checkpoint.head.name,
            "feat_dim": json.dumps(checkpoint.model.ip1.out_features)}


def export_model(model):
    """The torch.onnx.ONNXProgram of the Net `model` (on the CPU), its batch size dynamic."""
    # A batch of 2: torch.export would take a size of 1 for a constant.
    example = torch.zeros(2, 1, 28, 28)
    # verbose=False: without it, the exporter prints a line for each of its steps
    return torch.onnx.export(model.eval(), (example,), dynamo=True, input_names=[INPUT_NAME],
                             output_names=list(OUTPUT_NAMES),
                             dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)


def largest_differences(path, model, images, batch_sizes):
    """Per output, the largest absolute difference between onnxruntime's run of the ONNX file
    `path` and PyTorch's `model`, on the first n of the normalised `images` for each n in
    `batch_sizes`, and the largest relative one: divided by the largest magnitude of
    PyTorch's output in that batch."""
    import onnxruntime  # here: absent, require_packages() says so in one line
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    found = {name: ([], []) for name in OUTPUT_NAMES}
    for size in batch_sizes:
        batch = images[:size]
        with torch.no_grad():
            expected = model(batch)
        outputs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch.numpy()})
        for name, output, reference in zip(OUTPUT_NAMES, outputs, expected):
            absolute = np.abs(output - reference.numpy()).max()
            scale = max(reference.abs().max().item(), np.finfo(np.float32).tiny)
            found[name][0].append(absolute)
            found[name][1].append(absolute / scale)
    # np.max, not max(): a NaN must stay a NaN
    return {name: {"absolute": float(np.max(absolute)), "relative": float(np.max(relative))}
            for name, (absolute, relative) in found.items()}


def check_differences(differences, path):
    """UserError, naming the file `path`, when an output differs by more than TOLERANCE."""
    for name, found in differences.items():
        if not found["relative"] <= TOLERANCE:  # so that a NaN is refused too
            raise UserError(f"{path} not written: onnxruntime's {name} differs from PyTorch's "
                            f"by {found['relative']:.1e} relative ({found['absolute']:.1e} "
                            f"absolute), more than the {TOLERANCE:.0e} allowed")


def export_checkpoint(checkpoint, metadata, images, batch_sizes, path):
    """Export the model of the CheckpointRun `checkpoint` with `metadata` to the ONNX file
    `path`, put in place only once onnxruntime reproduces PyTorch within TOLERANCE on the
    normalised `images` in each of `batch_sizes` (else UserError, the file not written);
    returns the largest differences."""
    model = checkpoint.model  # read onto the CPU, where onnxruntime runs too
    program = export_model(model)
    program.model.metadata_props.update(metadata)
    differences = {}

    def verify(temp_path):
        differences.update(largest_differences(temp_path, model, images, batch_sizes))
        check_differences(differences, path)

    atomic_write(path, program.model_proto.SerializeToString(), check=verify)
    return differences
