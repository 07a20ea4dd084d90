"""run.json written and read back in one module: one reader for every command, which checks
each field they use and names the file and the field of one that is wrong, in one line, and
turns any file it cannot decode into one line too."""
import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from mnist_loader import TensorLoader

import animate
import compare
import embed
import evaluate
import export
import train_mnist_original_center as trainer
from run_machinery.devices import cpu_kind
from run_machinery.errors import UserError
from run_machinery.run_file import RunRecord, find_run_file, read_run_file, write_run_file
from run_machinery.run_folder import RunPaths

NAMES = ("ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen", "ibis", "jay")


def damaged(run, field, value):
    """A copy of the run.json dict `run` with `field` ("settings.epochs", "settings" ...)
    set to `value`, or removed when `value` is REMOVE."""
    run = json.loads(json.dumps(run))
    *parents, key = field.split(".")
    place = run
    for parent in parents:
        place = place[parent]
    if value is REMOVE:
        del place[key]
    else:
        place[key] = value
    return run


REMOVE = object()

# (field, value, what the message says of it), each seen to give a traceback before
DAMAGES = [
    ("settings.dataset", "cifar", "settings.dataset must be one of mnist, fashion-mnist"),
    ("settings", REMOVE, "settings is missing"),
    ("settings.epochs", "3", 'settings.epochs must be a whole number of at least 1, got "3"'),
    ("settings.epochs", 0, "settings.epochs must be a whole number of at least 1, got 0"),
    ("settings.scale", float("nan"), "settings.scale must be null or a finite number, got NaN"),
    ("settings.head", "magface", "settings.head must be one of softmax, normface"),
    ("settings.margin", 0.3,
     "settings.head, scale and margin do not fit: --margin does not apply to --head softmax"),
    ("settings.max_test_samples", -1, "settings.max_test_samples must be null or a whole number"),
    ("settings.loss_weight", "1", "settings.loss_weight must be a finite number"),
    ("settings.out_dir", 7, "settings.out_dir must be a path (a string), got 7"),
    ("settings.resume", 7, "settings.resume must be null or a path (a string), got 7"),
    ("holdout_classes", 8, "holdout_classes must be a list of class indices or names, got 8"),
    ("holdout_classes", [12], "holdout_classes: 12 is neither a class index 0-9"),
    ("holdout_classes", [True], "holdout_classes must be a list of class indices or names"),
    ("class_names", "0123456789", "class_names must be a list of at least two names"),
    ("mean", "0.1", "mean must be a finite number"),
    ("std", 0, "std must be a positive finite number, got 0"),
    ("dataset_dir", None, "dataset_dir must be a path (a string), got null"),
    ("resumed", "yesterday", "resumed must be a list of times (strings)"),
]


@pytest.fixture
def run_copy(holdout_run, tmp_path):
    """A copy of the held-out run's run.json, last checkpoint and test features: its folder."""
    copy = tmp_path / "run"
    (copy / "model").mkdir(parents=True)
    for name in ("run.json", "model/epoch_003.pth", "test_features.pt"):
        shutil.copy(holdout_run / name, copy / name)
    return copy


def write_damaged(folder, field, value):
    path = folder / "run.json"
    path.write_text(json.dumps(damaged(json.loads(path.read_text()), field, value)))
    return path


@pytest.mark.parametrize("field, value, message", DAMAGES)
def test_each_damaged_field_is_named_in_one_line(run_copy, field, value, message):
    path = write_damaged(run_copy, field, value)
    with pytest.raises(UserError) as error:
        read_run_file(run_copy)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "must hold a JSON object (the run described), got a list"),
    ("{ not json", "is not a readable run file"),
])
def test_a_file_that_is_no_run_description(tmp_path, content, message):
    (tmp_path / "run.json").write_text(content)
    with pytest.raises(UserError) as error:
        read_run_file(tmp_path)
    assert message in str(error.value)


# Files that json cannot decode or that decode to something else than they say; each raised
# RecursionError, ValueError or UnicodeDecodeError, or read silently, before.
UNDECODABLE = [
    (b"[" * 100_000 + b"]" * 100_000, "its JSON is nested too deep"),
    (b'{"settings": {"epochs": ' + b"9" * 5000 + b"}}", "it holds a number of too many digits"),
    (b'{"settings": {"out_dir": "caf\xe9"}}', "not UTF-8 text: byte 29 is 0xe9"),
    (b'{"settings": {"epochs": 3, "epochs": 5}}',
     'the key "epochs" is given twice in one object'),
]


@pytest.mark.parametrize("content, reason", UNDECODABLE,
                         ids=["deep", "long number", "not utf-8", "duplicate key"])
def test_a_file_that_cannot_be_decoded_is_one_line(tmp_path, content, reason):
    (tmp_path / "run.json").write_bytes(content)
    with pytest.raises(UserError) as error:
        read_run_file(tmp_path)
    assert str(error.value) == f"{tmp_path / 'run.json'} is not a readable run file ({reason})"


@pytest.mark.parametrize("content, reason", UNDECODABLE[:1], ids=["deep"])
def test_a_command_stops_in_one_line_on_a_run_file_nested_too_deep(run_copy, tmp_path, content,
                                                                   reason):
    (run_copy / "run.json").write_bytes(content)
    main, argv = command_argv("embed", run_copy, tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == (f"error: {run_copy / 'run.json'} is not a readable run file "
                               f"({reason})")


def test_an_intact_run_file_reads_as_written(run_copy):
    run = read_run_file(run_copy)
    written = json.loads((run_copy / "run.json").read_text())
    assert isinstance(run, RunRecord) and run.path == run_copy / "run.json"
    assert (run.dataset, run.epochs, run.head, list(run.holdout_classes), list(run.class_names),
            run.normalization) == (written["dataset"], written["settings"]["epochs"],
                                   written["settings"]["head"], written["holdout_classes"],
                                   written["class_names"], (written["mean"], written["std"]))
    # the run's files in its folder as it is now, not where it was written
    assert run.paths.model(3) == (run_copy / "model" / "epoch_003.pth").resolve()


def test_an_older_run_file_reads_with_the_defaults_of_its_time(run_copy):
    written = json.loads((run_copy / "run.json").read_text())
    for name in ("head", "scale", "margin", "softmax_weight", "triplet_weight", "dataset"):
        written["settings"].pop(name, None)
    for name in ("class_names", "mean", "std", "dataset"):
        written.pop(name, None)
    (run_copy / "run.json").write_text(json.dumps(written))
    run = read_run_file(run_copy)
    assert (run.head, run.scale, run.softmax_weight, run.triplet_weight, run.dataset,
            run.class_names, run.normalization) == ("softmax", None, 1.0, 0.0, "mnist", None, None)


def settings(tmp_path, **changes):
    values = dict(out_dir=str(tmp_path / "run"), model_path_temp=None, vis_img_path_temp=None,
                  dataset_dir="../data", dataset="mnist", holdout_classes=[8, 9], epochs=3,
                  tensorboard=None, img_show=False, resume=None)
    values.update(changes)
    return SimpleNamespace(**values)


def test_run_file_describes_the_run_and_keeps_its_start(tmp_path):
    paths = RunPaths.from_settings(settings(tmp_path))
    paths.out_dir.mkdir()
    loader = TensorLoader(torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long), 1,
                          mean=0.25, std=0.5, class_names=NAMES)
    write_run_file(paths, settings(tmp_path), tuple(range(8)), loader, torch.device("cpu"))
    run = json.loads(paths.run_file.read_text())
    assert (run["settings"]["epochs"] == 3 and run["holdout_classes"] == [8, 9]
            and run["classes"] == list(range(8)))
    # the loader's names and normalisation, which a folder dataset's own images decide
    assert run["dataset"] == "mnist" and run["class_names"] == list(NAMES)
    assert (run["mean"], run["std"], run["processes"]) == (0.25, 0.5, 1)
    assert run["torch"] == torch.__version__ and run["device"] == "cpu" and run["resumed"] == []
    # the run's own paths relative to its folder, the dataset's folder as given
    assert (run["settings"]["out_dir"], run["training_state"]) == (".", "training_state.pth")
    assert run["dataset_dir"] == run["settings"]["dataset_dir"] == "../data"
    assert run["cpu"] == cpu_kind()  # the machine the run's speed depends on
    assert run["git_commit"] is None or len(run["git_commit"].split("+")[0]) == 40
    write_run_file(paths, settings(tmp_path, epochs=5), (0, 1), loader, torch.device("cpu"),
                   resumed=True)
    again = read_run_file(paths.out_dir)
    assert again.started == run["started"] and len(again.resumed) == 1 and again.epochs == 5


def test_a_checkpoint_finds_its_run_file(run_copy, tmp_path):
    expected = read_run_file(run_copy)
    assert find_run_file(run_copy / "model" / "epoch_003.pth") == expected
    assert find_run_file(run_copy / "training_state.pth") == expected
    assert find_run_file(tmp_path / "elsewhere.pth") is None


def command_argv(command, folder, tmp_path):
    checkpoint = str(folder / "model" / "epoch_003.pth")
    return {"evaluate": (evaluate.main, [checkpoint, "--device", "cpu"]),
            "compare": (compare.main, [str(folder), "--out", str(tmp_path / "c.png")]),
            "animate": (animate.main, [str(folder / "test_features.pt"),
                                       "--out", str(tmp_path / "f.gif")]),
            "embed": (embed.main, [checkpoint, str(tmp_path / "digit.png")]),
            "export": (export.main, [checkpoint, "--onnx", str(tmp_path / "m.onnx")])}[command]


# The cases, each in a command it broke, and a whole file that is a list.
@pytest.mark.parametrize("command", ["evaluate", "compare", "animate", "embed", "export"])
@pytest.mark.parametrize("field, value, message", [
    ("settings.dataset", "cifar", "settings.dataset must be one of"),
    ("settings", REMOVE, "settings is missing"),
    ("settings.epochs", "3", "settings.epochs must be a whole number"),
    ("settings.scale", float("nan"), "settings.scale must be null or a finite number"),
    ("holdout_classes", 8, "holdout_classes must be a list"),
])
def test_every_command_stops_in_one_line_on_a_damaged_run_file(run_copy, tmp_path, command,
                                                               field, value, message):
    path = write_damaged(run_copy, field, value)
    main, argv = command_argv(command, run_copy, tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code.startswith(f"error: {path}: ") and message in stop.value.code
    assert "\n" not in stop.value.code


def test_resume_stops_in_one_line_on_a_damaged_run_file(reference_run, tmp_path):
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("run.json", "training_state.pth"):
        shutil.copy(reference_run / name, copy / name)
    (copy / "run.json").write_text("[]")
    with pytest.raises(SystemExit) as stop:
        trainer.main(["--resume", str(copy), "--out_dir", str(copy), "--epochs", "4"])
    assert stop.value.code == (f"error: {copy / 'run.json'} must hold a JSON object (the run "
                               "described), got a list")
