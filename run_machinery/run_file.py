"""run.json, a run described: written by the trainer and read back here, the one owner of
the file, for every command.

The trainer writes it at the start of a run and of each resume (`write_run_file`);
evaluate.py, compare.py, animate.py, embed.py, export.py, demo.py and --resume read it as a
`RunRecord`, whose typed fields are what they use. A file edited by hand or damaged stops
them with one line naming the file and the field that is wrong (or, for a file that is no
JSON, why it cannot be read), instead of a traceback from wherever the field is used: every
field they use is checked here for its type, its range and, for names, against those this
project knows. The run's own paths are recorded relative to its folder (a run is its
folder, wherever it is moved), the dataset's folder as given to the trainer.
"""
import argparse
import datetime
import json
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision

from margin_heads import HEADS, HeadSettingsError, check_head_settings
from mnist_loader import DATASETS

from .checkpointing import atomic_write
from .cli import REPO_DIR
from .datasets import class_names
from .devices import cpu_kind
from .errors import UserError
from .run_folder import RUN_FILE, RunPaths, recorded_settings, settings_in_folder
from .settings import parse_classes


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
    "resume": (lambda value: value is None or is_path(value), "null or a path (a string)"),
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


class DuplicateKeyError(ValueError):
    pass


def unique_keys(pairs):
    """A JSON object's pairs as a dict; a key given twice is refused (JSON keeps the last
    silently: a hand edit that adds a field again would be half undone)."""
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise DuplicateKeyError(f"the key {shown(key)} is given twice in one object")
    return dict(pairs)


def decoded(path):
    """The JSON content of the file `path`; UserError, in one line, for any file that cannot
    be read or decoded (not UTF-8, not JSON, nested too deep, a number too long, a key
    given twice)."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=unique_keys)
    except OSError as error:
        reason = error.strerror or str(error)
    except UnicodeDecodeError as error:
        reason = f"not UTF-8 text: byte {error.start} is {error.object[error.start]:#04x}"
    except RecursionError:
        reason = "its JSON is nested too deep"
    except DuplicateKeyError as error:
        reason = str(error)
    except ValueError as error:  # json's own errors, and a number of too many digits
        reason = (str(error) if isinstance(error, json.JSONDecodeError)
                  else "it holds a number of too many digits")
    raise UserError(f"{path} is not a readable run file ({reason})")


def first_of(values, name, default=None):
    return values[name] if values.get(name) is not None else default


@dataclass(frozen=True)
class RunRecord:
    """What a run.json says of its run, checked: the fields the commands use, with the
    defaults of runs made before a field existed. `paths` are the run's files in its
    folder as it is now; `dataset_dir` is as the trainer was given it (None: not recorded);
    `class_names`, `normalization` ((mean, std)) and `holdout_classes` are None when the
    run did not record them."""
    path: Path
    paths: RunPaths
    dataset: str
    dataset_dir: str
    class_names: tuple
    normalization: tuple
    holdout_classes: tuple
    head: str
    scale: float
    margin: float
    epochs: int
    max_test_samples: int
    channels_last: bool
    amp: bool
    softmax_weight: float
    loss_weight: float
    triplet_weight: float
    started: str
    resumed: tuple

    @classmethod
    def of(cls, run, path):
        """The record of the checked run.json content `run`, read from `path`."""
        settings = run["settings"]
        moved = settings_in_folder(settings, path.parent)
        holdout_classes = first_of(run, "holdout_classes", settings.get("holdout_classes"))
        names = run.get("class_names")
        return cls(path=path, paths=RunPaths.from_settings(argparse.Namespace(**moved)),
                   dataset=settings.get("dataset", "mnist"),  # runs from before the datasets
                   dataset_dir=first_of(run, "dataset_dir", settings.get("dataset_dir")),
                   class_names=tuple(names) if names else None,
                   normalization=((run["mean"], run["std"]) if {"mean", "std"} <= run.keys()
                                  else None),
                   holdout_classes=None if holdout_classes is None else tuple(holdout_classes),
                   head=settings.get("head", "softmax"),  # runs from before the heads
                   scale=settings.get("scale"), margin=settings.get("margin"),
                   epochs=settings["epochs"], max_test_samples=settings.get("max_test_samples"),
                   channels_last=settings.get("channels_last", True) is not False,
                   amp=bool(settings.get("amp")),
                   softmax_weight=first_of(settings, "softmax_weight", 1.0),
                   loss_weight=first_of(settings, "loss_weight", 1.0),
                   triplet_weight=first_of(settings, "triplet_weight", 0.0),
                   started=run.get("started"), resumed=tuple(run.get("resumed", ())))


def read_run_file(folder):
    """The RunRecord of the run.json in `folder`, checked (see `check_run_record`), or None
    when there is none."""
    path = Path(folder) / RUN_FILE
    if not path.is_file():
        return None
    run = decoded(path)
    check_run_record(run, path)
    return RunRecord.of(run, path)


def find_run_file(checkpoint):
    """The RunRecord of the run that wrote `checkpoint` (its run.json in its folder or the
    one above), or None."""
    for folder in (Path(checkpoint).parent, Path(checkpoint).parent.parent):
        run = read_run_file(folder)
        if run is not None:
            return run
    return None


def git_commit():
    """The commit of this checkout (with '+changes' when files differ from it), or None."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_DIR, capture_output=True,
                                text=True, timeout=10)
        changes = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                 cwd=REPO_DIR, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return commit.stdout.strip() + ("+changes" if changes.stdout.strip() else "")


def write_run_file(paths, settings, classes, train_loader, device, resumed=False):
    """Write run.json: everything needed to evaluate or resume the run, with the names of
    the classes and the normalisation of `train_loader`'s images (a folder dataset's are
    its own: the other commands read them here). A resumed run keeps the start time and
    adds the time of this resume."""
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    previous = read_run_file(paths.out_dir) if resumed else None
    recorded = recorded_settings(settings)
    run = {
        "settings": recorded,
        "dataset_dir": recorded["dataset_dir"],
        "dataset": settings.dataset,
        "classes": list(classes),
        "class_names": train_loader.class_names,
        "mean": train_loader.mean,
        "std": train_loader.std,
        "holdout_classes": list(settings.holdout_classes),
        "training_state": str(paths.training_state.relative_to(paths.out_dir)),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": str(device),
        "cpu": cpu_kind(),  # what the run's speed depends on, even when it trains elsewhere
        "processes": train_loader.world_size,
        "git_commit": git_commit(),
        "started": previous.started if previous and previous.started else now,
        "resumed": [*(previous.resumed if previous else ()), *([now] if resumed else [])],
    }
    atomic_write(paths.run_file, (json.dumps(run, indent=2) + "\n").encode())
