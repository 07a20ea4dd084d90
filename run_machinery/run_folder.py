"""A run's folder: where each of its files goes, and its settings file, run.json.

    OUT_DIR/run.json              the run described: settings, dataset, classes and their names,
                                  normalisation, versions, device, commit
    OUT_DIR/model/epoch_NNN.pth   the model's state_dict after each epoch (--model_path_temp)
    OUT_DIR/visual/epoch_NNN.png  the 2-D features after each epoch (--vis_img_path_temp)
    OUT_DIR/history.csv           one row of metrics per epoch, and its curves, history.png
    OUT_DIR/training_state.pth    everything --resume needs
    OUT_DIR/test_features.pt      the test features of every epoch, and features.gif from them
"""
import datetime
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from matplotlib.figure import Figure

from .checkpointing import atomic_write
from .devices import cpu_kind
from .errors import UserError
from .training_state import TRAINING_STATE_NAME

try:
    import fcntl
except ImportError:  # Windows has no flock: there a second trainer on a folder is not stopped
    fcntl = None

RUN_FILE = "run.json"
LOCK_FILE = "run.lock"
REPO_DIR = Path(__file__).resolve().parent.parent


def epoch_path(template, epoch):
    return Path(template.format(f"{epoch:03d}"))


@dataclass
class RunPaths:
    out_dir: Path
    model_path_temp: str
    vis_img_path_temp: str

    @classmethod
    def from_settings(cls, settings):
        """The paths of a run with these settings; the article's templates, when given, win."""
        out_dir = Path(settings.out_dir)
        return cls(out_dir, settings.model_path_temp or str(out_dir / "model" / "epoch_{}.pth"),
                   settings.vis_img_path_temp or str(out_dir / "visual" / "epoch_{}.png"))

    def model(self, epoch):
        return epoch_path(self.model_path_temp, epoch)

    def visual(self, epoch):
        return epoch_path(self.vis_img_path_temp, epoch)

    def __post_init__(self):
        self.run_file = self.out_dir / RUN_FILE
        self.history = self.out_dir / "history.csv"
        self.curves = self.out_dir / "history.png"  # the history's curves
        self.training_state = self.out_dir / TRAINING_STATE_NAME
        self.test_features = self.out_dir / "test_features.pt"
        self.gif = self.out_dir / "features.gif"
        self.train_batch = self.visual(1).parent / "train_batch.png"  # with --img_show

    def check(self, epochs):
        """Raise UserError, before any training, when an output path of epochs 1 to `epochs`
        cannot be used: a folder that cannot be written, a template without {}, a plot
        format matplotlib cannot write, a file name taken by a folder."""
        check_writable("out_dir", self.out_dir)
        for name, template in (("model_path_temp", self.model_path_temp),
                               ("vis_img_path_temp", self.vis_img_path_temp)):
            if "{}" not in template:
                raise UserError(f"--{name} must contain {{}} for the epoch number, "
                                f"got {template!r}")
            try:
                folder = epoch_path(template, 1).parent
            except (IndexError, KeyError, ValueError) as error:
                raise UserError(f"--{name} is not a valid path template "
                                f"({error}): {template!r}") from None
            check_writable(name, folder)
        check_image_format("--vis_img_path_temp", self.visual(1))
        for path in [*self.fixed_files(), *(self.model(epoch) for epoch in range(1, epochs + 1)),
                     *(self.visual(epoch) for epoch in range(1, epochs + 1))]:
            if path.is_dir():
                raise UserError(f"the output file {path} is an existing folder; "
                                f"remove it or choose other paths")

    def fixed_files(self):
        return [self.run_file, self.history, self.curves,
                self.training_state, self.test_features, self.gif]

    def run_files(self, epochs):
        """The files of a run that are already in place: its fixed files, and its epoch files
        up to epoch max(`epochs`, 999)."""
        epoch_files = [path(epoch) for path in (self.model, self.visual)
                       for epoch in range(1, max(epochs, 999) + 1)]
        return [path for path in [*self.fixed_files(), *epoch_files] if path.is_file()]

    def claim(self, epochs, resuming, overwrite):
        """Make the folder this run's: refuse a folder that holds another run's files unless
        `resuming` it or told to `overwrite` them, in which case they are deleted first."""
        existing = self.run_files(epochs)
        if resuming or not existing:
            return
        if not overwrite:
            raise UserError(f"{self.out_dir} holds another run's outputs ({existing[0].name} and "
                            f"{len(existing) - 1} more files); continue it with --resume auto, "
                            f"choose another --out_dir, or start afresh there with --overwrite "
                            f"(deletes them)")
        for path in existing:
            path.unlink()
        print(f"--overwrite: deleted the {len(existing)} files of the run "
              f"that was in {self.out_dir}")


class RunLock:
    """Held for a run's life: a second trainer on the same folder stops with one line naming
    the process that holds it. The lock goes with the process, also when it is killed."""

    def __init__(self, out_dir):
        path = Path(out_dir) / LOCK_FILE
        self.file = open(path, "a+")
        try:
            if fcntl:
                fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            raise UserError(f"another trainer (process {holder}) is writing to {out_dir}; "
                            f"wait for it to end, stop it, or choose another --out_dir") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(str(os.getpid()))
        self.file.flush()

    def release(self):
        if fcntl:
            fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def check_image_format(flag, path):
    """matplotlib must be able to write the format that `path`'s suffix names."""
    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix not in Figure().canvas.get_supported_filetypes():
        raise UserError(f"{flag}: matplotlib cannot write .{suffix} images ({path}); use one of "
                        f"{', '.join(sorted(Figure().canvas.get_supported_filetypes()))}")


def check_writable(name, folder):
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise UserError(f"--{name}: cannot write to the folder {folder} "
                        f"({error.strerror or error})") from None


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
    run = {
        "settings": vars(settings),
        "dataset_dir": str(Path(settings.dataset_dir).resolve()),
        "dataset": settings.dataset,
        "classes": list(classes),
        "class_names": train_loader.class_names,
        "mean": train_loader.mean,
        "std": train_loader.std,
        "holdout_classes": list(settings.holdout_classes),
        "training_state": str(paths.training_state.resolve()),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": str(device),
        "cpu": cpu_kind(),  # what the run's speed depends on, even when it trains elsewhere
        "processes": train_loader.world_size,
        "git_commit": git_commit(),
        "started": previous["started"] if previous else now,
        "resumed": (previous or {}).get("resumed", []) + ([now] if resumed else []),
    }
    atomic_write(paths.run_file, (json.dumps(run, indent=2) + "\n").encode())


def read_run_file(folder):
    """The run.json in `folder` as a dict, or None when there is none."""
    path = Path(folder) / RUN_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{path} is not a readable run file ({error})") from None


def find_run_file(checkpoint):
    """The run.json of the run that wrote `checkpoint` (in its folder or the one above), or None."""
    for folder in (Path(checkpoint).parent, Path(checkpoint).parent.parent):
        run = read_run_file(folder)
        if run is not None:
            return run
    return None
