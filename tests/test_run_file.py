"""run.json read back: one reader for every command, which checks each field they use and
names the file and the field of one that is wrong, in one line."""
import json
import shutil

import pytest

import animate
import compare
import embed
import evaluate
import export
import train_mnist_original_center as trainer
from run_machinery.errors import UserError
from run_machinery.run_record import find_run_file, read_run_file


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


def test_an_intact_run_file_reads_as_written(run_copy):
    run = read_run_file(run_copy)
    assert run == json.loads((run_copy / "run.json").read_text())


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
