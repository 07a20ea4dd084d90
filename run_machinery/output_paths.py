"""Where a command may write: the one rule for the output paths of every command, and for
the trainer's outputs against the dataset and other runs.

An output may not be
  - a file the command reads (its checkpoint, the pictures given, the test features kept
    beside the checkpoint),
  - a file that a run's folder owns, of any run: run.json, history.csv, training_state.pth,
    test_features.pt, run.lock, and whatever lies in its model/ and visual/ folders or is
    one of its recorded templates' files,
  - one of the dataset's files (the IDX files, their torchvision folder; a folder dataset's
    train/ and test/ and its decoded copies),
  - anything but a regular file: a folder, a named pipe, a device, a socket (whoever runs
    the command, root too),
  - another output of the same command.
Paths are compared resolved (`..` and symbolic links followed) and, where both exist, as
files (hard links). An output's missing folders are made when it is written; the nearest
existing one must be a folder. Each refusal is a UserError naming the flag, the path and
why, raised before any work: nothing is written.
"""
import argparse
import os
import stat
from pathlib import Path

from mnist_loader import DATASETS

from .cli import printable
from .datasets import DECODED_FILE, IDX_FILES
from .errors import UserError
from .run_file import read_run_file
from .run_folder import RUN_FILE, TRAINING_STATE_NAME, Output, RunPaths

# A folder holding one of these is a run's.
RUN_MARKERS = (RUN_FILE, TRAINING_STATE_NAME)
SPECIAL_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"),
                 (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
                 (stat.S_ISSOCK, "a socket"))


def resolved(path):
    return Path(os.path.realpath(path))


def special_kind(path):
    """What `path` is when it exists and is not a regular file ("a folder", ...), else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return next((kind for test, kind in SPECIAL_KINDS if test(mode)), None)


def same_file(path, other):
    """Whether the resolved paths name one file: the same path, or the same file (a hard link)."""
    if path == other:
        return True
    try:
        return os.path.samefile(path, other)
    except OSError:
        return False


def is_run_folder(folder):
    return any((folder / name).is_file() for name in RUN_MARKERS)


def default_paths(folder):
    """The RunPaths of a run in `folder` with the default templates."""
    return RunPaths.from_settings(argparse.Namespace(out_dir=str(folder), model_path_temp=None,
                                                     vis_img_path_temp=None))


def run_paths(folder):
    """The RunPaths of the run in `folder`: its recorded templates, when its run.json says
    them and can be read, else the default ones."""
    try:
        run = read_run_file(folder)
    except UserError:  # a damaged run.json: the run's files are still its default ones
        run = None
    return run.paths if run else default_paths(folder)


def owned_by_run(path, paths):
    """Whether the resolved `path` is a file of the run of `paths` (see the module's list)."""
    owned = [paths.run_file, paths.history, paths.training_state, paths.test_features,
             paths.lock]
    if any(path == resolved(file) for file in owned):
        return True
    defaults = default_paths(paths.out_dir)  # model/ and visual/: all in them is the run's
    if any(path.is_relative_to(resolved(folder))
           for folder in (defaults.model(1).parent, defaults.visual(1).parent)):
        return True
    templates = []
    for name, template in paths.templates():
        try:
            templates.append(Output.of_template(name, template))
        except (UserError, IndexError, KeyError, ValueError):  # no template of files: none kept
            pass
    return any(output.epoch_of(str(path)) for output in templates)


def run_owning(path):
    """The folder of the run that owns the resolved `path` (in its folder or in a folder
    below it), or None."""
    for folder in (path.parent, path.parent.parent):
        if is_run_folder(folder) and owned_by_run(path, run_paths(folder)):
            return folder
    return None


def dataset_paths(dataset, dataset_dir):
    """The files and folders (resolved) that hold `dataset` in `dataset_dir`; a folder's
    contents are all the dataset's."""
    folder = Path(dataset_dir)
    if DATASETS[dataset].class_names is None:  # an image folder
        return [resolved(folder / name) for name in
                ("train", "test", DECODED_FILE.format("train"), DECODED_FILE.format("test"))]
    return ([resolved(folder / DATASETS[dataset].folder)]
            + [resolved(folder / f"{name}{suffix}") for name in IDX_FILES for suffix in ("", ".gz")])


def in_dataset(path, dataset, dataset_dir):
    """Whether the resolved `path` is one of `dataset`'s files in `dataset_dir` (None: no
    dataset)."""
    return dataset is not None and any(path == held or path.is_relative_to(held)
                                       for held in dataset_paths(dataset, dataset_dir))


def refusal(path, reads=(), dataset=None, dataset_dir=None):
    """Why the output `path` may not be written (see the module's rule), or None."""
    target = resolved(path)
    kind = special_kind(target)
    if kind:
        return f"it is {kind}, not a regular file"
    for read in reads:
        if same_file(target, resolved(read)):
            return f"it is {printable(read)}, which this command reads"
    owner = run_owning(target)
    if owner:
        return f"it is a file of the run in {printable(owner)}"
    if in_dataset(target, dataset, dataset_dir):
        return f"it is a file of the dataset in {printable(dataset_dir)}"
    folder = next(parent for parent in target.parents if os.path.lexists(parent))
    if not folder.is_dir():
        return f"{printable(folder)} is not a folder"
    return None


def check_outputs(outputs, reads=(), dataset=None, dataset_dir=None):
    """UserError, before any work, for the first output of `outputs` ((flag, path) pairs; a
    path None is no output) that the rule refuses: `reads` are the files the command reads,
    `dataset` and `dataset_dir` the dataset it reads."""
    outputs = [(flag, path) for flag, path in outputs if path is not None]
    for index, (flag, path) in enumerate(outputs):
        reason = refusal(path, reads, dataset, dataset_dir)
        if reason:
            raise UserError(f"{flag} {printable(path)}: {reason}; write elsewhere")
        for other_flag, other in outputs[:index]:
            if same_file(resolved(path), resolved(other)):
                raise UserError(f"{other_flag} and {flag} both write {printable(path)}; give "
                                f"each output its own file")


def check_run_outputs(paths, epochs, dataset, dataset_dir):
    """The trainer's outputs (a RunPaths, of epochs 1 to `epochs`), before any folder is
    made: none a file of the dataset or in another run's folder; then RunPaths.check (its
    own files apart, and the folders made)."""
    try:
        outputs = paths.outputs()
    except (UserError, IndexError, KeyError, ValueError):
        outputs = []  # a broken template: RunPaths.check says what is wrong with it
    folder = resolved(paths.out_dir)
    for output in outputs:
        path = resolved(output.prefix if output.suffix is None
                        else output.prefix + "001" + output.suffix)
        if in_dataset(path, dataset, dataset_dir):
            raise UserError(f"{output.name} writes {printable(path)}, a file of the dataset in "
                            f"{printable(dataset_dir)}; write elsewhere")
        owner = run_owning(path) or (path.parent if is_run_folder(path.parent) else None)
        if owner and owner != folder:
            raise UserError(f"{output.name} writes {printable(path)}, in the folder of another "
                            f"run ({printable(owner)}); write elsewhere")
    paths.check(epochs)
