"""A run's folder: where each of its files goes, its lock, and the settings as its files
record them (the run's own paths relative to the folder: a run is its folder).

    OUT_DIR/run.json              the run described: settings, dataset, classes and their names,
                                  normalisation, versions, device, commit
    OUT_DIR/model/epoch_NNN.pth   the model's state_dict after each epoch (--model_path_temp)
    OUT_DIR/visual/epoch_NNN.png  the 2-D features after each epoch (--vis_img_path_temp)
    OUT_DIR/history.csv           one row of metrics per epoch, and its curves, history.png
    OUT_DIR/training_state.pth    everything --resume needs
    OUT_DIR/test_features.pt      the test features of every epoch, and features.gif from them
"""
import glob
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

try:
    import fcntl
except ImportError:  # Windows has no flock: there a second trainer on a folder is not stopped
    fcntl = None

RUN_FILE = "run.json"  # written and read by run_file.py
TRAINING_STATE_NAME = "training_state.pth"  # its format: training_state.py
LOCK_FILE = "run.lock"
# A checkpoint's calibrated threshold, beside it: epoch_040.pth -> epoch_040.verification.json
# (written by run_machinery/verification.py)
VERIFICATION_SUFFIX = ".verification.json"
# The settings that name the run's own files: recorded relative to its folder.
RUN_PATHS = ("model_path_temp", "vis_img_path_temp", "resume")


def verification_record_path(checkpoint):
    """Where the threshold calibrated for `checkpoint` is recorded: beside it."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + VERIFICATION_SUFFIX)


def epoch_path(template, epoch):
    return Path(template.format(f"{epoch:03d}"))


# Stands for the epoch number while a template is resolved: a character of Unicode's private
# use area, which no path of a run holds.
EPOCH_MARK = "\ue000"


def is_epoch_number(text, epochs=None):
    """Whether `text` is the epoch number a template gets for one of epochs 1 to `epochs`
    (None: any): at least three ASCII digits, zero-padded to three only."""
    return (text.isascii() and text.isdigit() and f"{int(text):03d}" == text
            and 1 <= int(text) <= (epochs or int(text)))


@dataclass(frozen=True)
class Output:
    """One output of a run, resolved (`..` and symbolic links followed, as far as they
    exist): the file `prefix`, or with a `suffix` the files prefix + NNN + suffix, NNN the
    zero-padded epoch. `name` names it to the user: its flag or its file name."""
    name: str
    prefix: str
    suffix: str = None

    @classmethod
    def of(cls, name, path):
        return cls(name, os.path.realpath(path))

    @classmethod
    def of_template(cls, name, template):
        """UserError when the epoch's part of `template` is undone by a `..`."""
        resolved = os.path.realpath(template.format(EPOCH_MARK))
        if EPOCH_MARK not in resolved:
            raise UserError(f"--{name} writes one file, {resolved}, for every epoch (its {{}} "
                            f"is undone by a '..' in {template!r}); give each epoch its own file")
        prefix, suffix = resolved.split(EPOCH_MARK)
        return cls(f"--{name}", prefix, suffix)

    def epoch_of(self, path, epochs=None):
        """The epoch whose file is `path` (resolved), or None."""
        if self.suffix is None or not (path.startswith(self.prefix) and path.endswith(self.suffix)):
            return None
        number = path[len(self.prefix):len(path) - len(self.suffix)]
        return int(number) if is_epoch_number(number, epochs) else None

    def shared_file(self, other, epochs):
        """A file that this output and `other` both write in epochs 1 to `epochs`, or None.
        Work bounded by the number of digits of `epochs`, not by the epochs."""
        if self.suffix is None and other.suffix is None:
            return self.prefix if self.prefix == other.prefix else None
        if other.suffix is None:
            return other.prefix if self.epoch_of(other.prefix, epochs) else None
        if self.suffix is None:
            return other.shared_file(self, epochs)
        for digits in range(3, max(3, len(str(epochs))) + 1):
            path = self.common_file(other, digits, epochs)
            if path:
                return path
        return None

    def common_file(self, other, digits, epochs):
        """The file both templates write when this one's epoch has `digits` digits, or None:
        the two names laid over each other, the digits neither fixes (where both epochs
        lie) chosen smallest, as larger ones only make the epochs larger."""
        length = len(self.prefix) + digits + len(self.suffix)
        other_digits = length - len(other.prefix) - len(other.suffix)
        if other_digits < 3:
            return None
        mine = self.prefix + EPOCH_MARK * digits + self.suffix
        theirs = other.prefix + EPOCH_MARK * other_digits + other.suffix
        laid = [a if b == EPOCH_MARK else b for a, b in zip(mine, theirs)]
        if any(EPOCH_MARK not in (a, b) and a != b for a, b in zip(mine, theirs)):
            return None
        free = [index for index, char in enumerate(laid) if char == EPOCH_MARK]
        spans = [(len(self.prefix), digits), (len(other.prefix), other_digits)]
        for index in free:
            laid[index] = "0"
        for start, width in spans:  # an epoch of more than three digits has no leading zero
            if width > 3 and start in free:
                laid[start] = "1"
        for start, width in spans:  # nor is it 0
            number = "".join(laid[start:start + width])
            if free and number.isdigit() and int(number) == 0:
                laid[free[-1]] = "1"
        path = "".join(laid)
        return path if all(is_epoch_number(path[start:start + width], epochs)
                           for start, width in spans) else None

    def existing_files(self, epochs=None):
        """The files or folders in place that are this output (of epochs 1 to `epochs`;
        None: of any epoch), in epoch order; found by listing their folder, not by epoch."""
        if self.suffix is None:
            return [Path(self.prefix)] if os.path.lexists(self.prefix) else []
        found = glob.glob(glob.escape(self.prefix) + "*" + glob.escape(self.suffix))
        return [Path(path) for path in sorted(found, key=lambda path: (len(path), path))
                if self.epoch_of(path, epochs)]


@dataclass
class RunPaths:
    out_dir: Path
    model_path_temp: str
    vis_img_path_temp: str
    tensorboard: str = None
    img_show: bool = False

    @classmethod
    def from_settings(cls, settings):
        """The paths of a run with these settings; the article's templates, when given, win."""
        out_dir = Path(settings.out_dir)
        return cls(out_dir, settings.model_path_temp or str(out_dir / "model" / "epoch_{}.pth"),
                   settings.vis_img_path_temp or str(out_dir / "visual" / "epoch_{}.png"),
                   getattr(settings, "tensorboard", None), getattr(settings, "img_show", False))

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
        self.lock = self.out_dir / LOCK_FILE
        self.train_batch = self.visual(1).parent / "train_batch.png"  # with --img_show

    def check(self, epochs):
        """Raise UserError, before any training, when an output path of epochs 1 to `epochs`
        cannot be used: a folder that cannot be written, a template without {}, two outputs
        that resolve to the same file, a plot format matplotlib cannot write, a file name
        taken by a folder. The work does not grow with `epochs`."""
        check_writable("out_dir", self.out_dir)
        for name, template in self.templates():
            if "{}" not in template:
                raise UserError(f"--{name} must contain {{}} for the epoch number, "
                                f"got {template!r}")
            try:
                folder = epoch_path(template, 1).parent
            except (IndexError, KeyError, ValueError) as error:
                raise UserError(f"--{name} is not a valid path template "
                                f"({error}): {template!r}") from None
            check_writable(name, folder)
        outputs = self.outputs()
        for index, output in enumerate(outputs):
            for other in outputs[index + 1:]:
                shared = output.shared_file(other, epochs)
                if shared:
                    raise UserError(f"{output.name} and {other.name} both write {shared}; "
                                    f"give each output its own file")
        check_image_format("--vis_img_path_temp", self.visual(1))
        for output in outputs:
            for path in output.existing_files(epochs):
                if path.is_dir() and output.name != "--tensorboard":
                    raise UserError(f"the output file {path} is an existing folder; "
                                    f"remove it or choose other paths")

    def templates(self):
        return (("model_path_temp", self.model_path_temp),
                ("vis_img_path_temp", self.vis_img_path_temp))

    def fixed_files(self):
        return [self.run_file, self.history, self.curves,
                self.training_state, self.test_features, self.gif]

    def outputs(self):
        """Every output of the run, resolved: the files of run_files, the lock, TensorBoard's
        folder and the --img_show picture when asked for."""
        fixed = [*self.fixed_files(), self.lock, *([self.train_batch] if self.img_show else [])]
        return ([Output.of(path.name, path) for path in fixed]
                + [Output.of_template(name, template) for name, template in self.templates()]
                + ([Output.of("--tensorboard", self.tensorboard)] if self.tensorboard else []))

    def run_files(self):
        """The files of a run that are in place (resolved): its fixed files, then its epoch
        files of any epoch, in epoch order."""
        return [path for output in self.outputs() if output.name not in (LOCK_FILE, "--tensorboard")
                for path in output.existing_files() if path.is_file()]

    def claim(self, resuming, overwrite):
        """Make the folder this run's: refuse a folder that holds another run's files unless
        `resuming` it or told to `overwrite` them, in which case they are deleted first; a
        run.json alone is a run that never finished an epoch, started again. Files that the
        templates would overwrite outside the folder are never deleted: the run is refused."""
        existing = self.run_files()
        folder = Path(os.path.realpath(self.out_dir))
        outside = [path for path in existing if not path.is_relative_to(folder)]
        if resuming or not existing or existing == [folder / RUN_FILE]:
            return
        if outside:
            more = f" (and {len(outside) - 1} more)" if len(outside) > 1 else ""
            raise UserError(f"{outside[0]}{more} outside {self.out_dir} would be overwritten by "
                            f"this run's templates; --overwrite only deletes files in --out_dir: "
                            f"move them away or choose other --model_path_temp or "
                            f"--vis_img_path_temp")
        if not overwrite:
            raise UserError(f"{self.out_dir} holds another run's outputs ({existing[0].name} and "
                            f"{len(existing) - 1} more files); continue it with --resume auto, "
                            f"choose another --out_dir, or start afresh there with --overwrite "
                            f"(deletes them)")
        for path in existing:
            path.unlink()
        print(f"--overwrite: deleted {len(existing)} files of the run in {self.out_dir}: "
              + ", ".join(str(path.relative_to(folder)) for path in existing))


def recorded_settings(settings):
    """The settings (a Namespace, its folders absolute) as a run's files record them: its
    out_dir ".", its templates and training state relative to it (a run is its folder,
    wherever it is moved), the others, such as the dataset's folder, as given."""
    folder = settings.out_dir
    return {**vars(settings), "out_dir": ".",
            **{name: os.path.relpath(getattr(settings, name), folder)
               for name in RUN_PATHS if getattr(settings, name, None)}}


def settings_in_folder(settings, folder):
    """A run's recorded `settings` (a dict) as the run is now, in `folder`: a run is its
    folder as it is now, wherever it was written. Its out_dir becomes `folder`, and its
    own paths follow it: those recorded relative to it, and in runs that recorded absolute
    paths, those inside the folder it was written in."""
    recorded, folder = Path(settings["out_dir"]), Path(folder).resolve()
    moved = dict(settings, out_dir=str(folder))
    for name in RUN_PATHS:
        path = settings.get(name)
        if not path:
            continue
        if not recorded.is_absolute():  # relative to the folder
            moved[name] = os.path.join(folder, path)
        elif Path(path).is_relative_to(recorded):
            moved[name] = str(folder / Path(path).relative_to(recorded))
    return moved


class RunLock:
    """Held for a run's life: a second trainer on the same folder stops with one line naming
    the process that holds it. The lock goes with the process, also when it is killed."""

    def __init__(self, out_dir):
        path = Path(out_dir) / LOCK_FILE
        try:  # never through a link: the PID would go into whatever file it names
            handle = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as error:
            if path.is_symlink():
                raise UserError(f"{path} is a symbolic link; a run's lock is a file of its own: "
                                f"remove the link") from None
            raise UserError(f"cannot open the run's lock {path} ({error.strerror or error})") \
                from None
        self.file = os.fdopen(handle, "r+")
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
    # Imported here: export.py reads run folders (output_paths) without matplotlib.
    from matplotlib.figure import Figure

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
