"""run.json read back: the one reader of a run's settings file, for every command.

The trainer writes run.json (see run_folder.write_run_file); evaluate.py, compare.py,
animate.py, embed.py, export.py and --resume read it here. A file edited by hand or
damaged stops them with one line naming the file and the field that is wrong, instead of
a traceback from wherever the field is used: every field they use is checked here for its
type, its range and, for names, against those this project knows.
"""
import json
import math
from pathlib import Path

from margin_heads import HEADS, HeadSettingsError, check_head_settings
from mnist_loader import DATASETS, class_names
from .errors import UserError
from .settings import parse_classes

RUN_FILE = "run.json"


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def is_path(value):
    return isinstance(value, str)


def is_list_of(kinds):
    return lambda value: (isinstance(value, list) and all(
        isinstance(item, kinds) and not isinstance(item, bool) for item in value))


CLASSES = (is_list_of((int, str)), "a list of class indices or names")
WEIGHT = (lambda value: is_number(value) and value >= 0, "a finite number, not negative")
# Each field the commands use: its test and the rule it states. Fields absent from a run
# take the readers' defaults (runs made before the field existed), but for REQUIRED ones.
SETTINGS_FIELDS = {
    "dataset": (lambda value: value in DATASETS, f"one of {', '.join(DATASETS)}"),
    "dataset_dir": (is_path, "a path (a string)"),
    "out_dir": (is_path, "a path (a string)"),
    "model_path_temp": (lambda value: value is None or is_path(value), "null or a path template"),
    "vis_img_path_temp": (lambda value: value is None or is_path(value),
                          "null or a path template"),
    "epochs": (is_count, "a whole number of at least 1"),
    "max_test_samples": (lambda value: value is None or is_count(value),
                         "null or a whole number of at least 1"),
    "holdout_classes": CLASSES,
    "head": (lambda value: value in HEADS, f"one of {', '.join(HEADS)}"),
    "scale": (lambda value: value is None or is_number(value), "null or a finite number"),
    "margin": (lambda value: value is None or is_number(value), "null or a finite number"),
    "softmax_weight": WEIGHT,
    "loss_weight": WEIGHT,
    "triplet_weight": WEIGHT,
}
RUN_FIELDS = {
    "dataset": SETTINGS_FIELDS["dataset"],
    "dataset_dir": SETTINGS_FIELDS["dataset_dir"],
    "class_names": (lambda value: is_list_of(str)(value) and len(value) >= 2,
                    "a list of at least two names"),
    "mean": (is_number, "a finite number"),
    "std": (lambda value: is_number(value) and value > 0, "a positive finite number"),
    "holdout_classes": CLASSES,
    "started": (lambda value: isinstance(value, str), "a time (a string)"),
    "resumed": (is_list_of(str), "a list of times (strings)"),
}
REQUIRED_SETTINGS = ("out_dir", "model_path_temp", "vis_img_path_temp", "epochs")
JSON_KINDS = {list: "a list", str: "a string", int: "a number", float: "a number",
              bool: "true or false", type(None): "null"}


def shown(value):
    """A field's value as JSON writes it, cut short: the message stays one line."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_run_record(run, path):
    """Raise UserError naming `path` and the field when the run.json content `run` lacks
    a field the commands need or holds one of the wrong type, range or name."""
    if not isinstance(run, dict):
        raise UserError(f"{path} must hold a JSON object (the run described), got "
                        f"{JSON_KINDS[type(run)]}")
    if not isinstance(run.get("settings"), dict):
        raise UserError(f"{path}: settings " + ("is missing" if "settings" not in run else
                                                f"must be a JSON object, got "
                                                f"{shown(run['settings'])}"))
    settings = run["settings"]
    for name in REQUIRED_SETTINGS:
        if name not in settings:
            raise UserError(f"{path}: settings.{name} is missing")
    for prefix, fields, values in (("settings.", SETTINGS_FIELDS, settings),
                                   ("", RUN_FIELDS, run)):
        for name, (test, rule) in fields.items():
            if name in values and not test(values[name]):
                raise UserError(f"{path}: {prefix}{name} must be {rule}, "
                                f"got {shown(values[name])}")
    try:
        check_head_settings(settings.get("head", "softmax"), settings.get("scale"),
                            settings.get("margin"))
    except HeadSettingsError as error:
        raise UserError(f"{path}: settings.head, scale and margin do not fit: {error}") from None
    dataset = settings.get("dataset", "mnist")
    # a folder's classes are its run's, recorded (else they are checked when it is read)
    names = run.get("class_names") or (None if dataset == "folder" else class_names(dataset))
    for field, classes in (("holdout_classes", run.get("holdout_classes")),
                           ("settings.holdout_classes", settings.get("holdout_classes"))):
        if names and classes is not None:
            parse_classes(dataset, classes, names, flag=f"{path}: {field}")


def read_run_file(folder):
    """The run.json in `folder` as a dict, checked (see `check_run_record`), or None when
    there is none."""
    path = Path(folder) / RUN_FILE
    if not path.is_file():
        return None
    try:
        run = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{path} is not a readable run file ({error})") from None
    check_run_record(run, path)
    return run


def find_run_file(checkpoint):
    """The run.json of the run that wrote `checkpoint` (in its folder or the one above), or None."""
    for folder in (Path(checkpoint).parent, Path(checkpoint).parent.parent):
        run = read_run_file(folder)
        if run is not None:
            return run
    return None
