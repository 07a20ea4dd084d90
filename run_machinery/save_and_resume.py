"""Saving a run's training state after each epoch and when it is stopped in one, and
resuming: the settings of a resumed run and the state put back into its objects
(`StateKeeper`); the file's format is training_state.py's.
"""
import contextlib
import shlex
from pathlib import Path

import torch

from .checkpointing import CheckpointError, load_module_state
from .errors import UserError
from .history import EpochProgress, History
from .nan_watch import NonFiniteError, check_data_spread, remedy
from .run_folder import TRAINING_STATE_NAME, recorded_settings, settings_in_folder
from .settings import holdout_class_indices
from .stop_signals import TrainingInterrupted
from .training_state import (
    NotATrainingState,
    load_training_state,
    restore_rng_states,
    rng_states,
    save_training_state,
)

# Settings a resumed run keeps, and why: those that fix the order of the training data, and
# those that fix how its checkpoints are read (every command reads each checkpoint of a run
# with the run's one dataset, head and feature size).
DATA_ORDER = "it fixes the order of the training data"
CHECKPOINT_READING = "it fixes how its checkpoints are read"
FIXED_ON_RESUME = {"seed": DATA_ORDER, "batch_size": DATA_ORDER, "max_train_samples": DATA_ORDER,
                   "holdout_classes": DATA_ORDER, "classes_per_batch": DATA_ORDER,
                   "images_per_class": DATA_ORDER, "dataset": CHECKPOINT_READING,
                   "head": CHECKPOINT_READING, "scale": CHECKPOINT_READING,
                   "margin": CHECKPOINT_READING, "feat_dim": CHECKPOINT_READING}



def resume_path(resume, out_dir):
    """The training state that `--resume` names: 'auto' (the one in `out_dir`), a run's
    folder, or the file itself."""
    path = Path(out_dir) / TRAINING_STATE_NAME if resume == "auto" else Path(resume)
    if path.is_dir():
        path = path / TRAINING_STATE_NAME
    if resume == "auto" and not path.is_file():
        raise UserError(f"--resume auto: there is no {TRAINING_STATE_NAME} in {path.parent} "
                        f"(the --out_dir), so there is no run to continue there; start one "
                        f"without --resume, or give --resume PATH")
    return path


def state_to_resume(path):
    """The training state in `path`, which --resume names; CheckpointError as
    `load_training_state` raises it, naming the file to give for one of another kind."""
    try:
        return load_training_state(path)
    except NotATrainingState as error:
        raise CheckpointError(f"{error}; resume from the {TRAINING_STATE_NAME} of the run's "
                              f"folder") from None


def resumed_run_settings(parser, argv, args):
    """The settings of the stopped run that `args.resume` names (with `args.out_dir` for
    'auto'): those it was started with, but for the flags given now in `argv`."""
    path = resume_path(args.resume, args.out_dir)
    saved = settings_in_folder(state_to_resume(path)["args"], path.parent)  # where it is now
    resumed = resumed_settings(parser, argv, saved)
    resumed.resume = str(path)
    return resumed


def resumed_settings(parser, argv, saved):
    """The settings of a resumed run: those it was started with (`saved`, in the run's
    folder as it is now), but for the flags given now in `argv`, parsed by the trainer's
    `parser`. The run's folder is where its training state is: another --out_dir is refused."""
    known = vars(parser.parse_args([]))
    saved = {name: value for name, value in saved.items() if name in known and name != "resume"}
    parser.set_defaults(**saved)
    resumed = parser.parse_args(argv)
    if Path(resumed.out_dir).resolve() != Path(saved["out_dir"]):
        raise UserError(f"--resume: the run's folder is {saved['out_dir']} (where its training "
                        f"state is), not the --out_dir {resumed.out_dir}; a run goes on in its "
                        f"own folder (copy the folder to go on elsewhere)")
    resumed.out_dir = saved["out_dir"]
    # as recorded: the classes given again, by name or index, compare as sorted indices
    resumed.holdout_classes = holdout_class_indices(resumed)
    changed = [name for name, value in saved.items()
               if getattr(resumed, name) != value and name != "epochs"]
    for name in changed:
        if name in FIXED_ON_RESUME:
            raise UserError(f"--resume: --{name} {getattr(resumed, name)} differs from the run's "
                            f"{saved[name]}; {FIXED_ON_RESUME[name]}, so a resumed run keeps it "
                            f"(start a new run to change it)")
    if changed:
        print("Resuming with changed settings: "
              + ", ".join(f"--{name} {getattr(resumed, name)} (was {saved[name]})"
                          for name in changed))
    return resumed


def resume(state, modules, optimizers, scheduler, train_loader, settings):
    """Load a training state into this run's objects (dicts name -> object, as saved).
    Returns (history, first epoch to train, progress of the interrupted epoch or None)."""
    if state["partial_epoch"] is not None and train_loader.world_size > 1:
        raise UserError(f"--resume: the run was stopped in the middle of epoch "
                        f"{state['epoch'] + 1} by a single process; finish that epoch without "
                        f"torchrun (add --epochs {state['epoch'] + 1}), then resume under torchrun")
    saved_centers = state["modules"]["center_loss"]["centers"].shape
    centers = modules["center_loss"].centers.shape
    if saved_centers != centers:
        raise UserError(f"--resume: the run in the checkpoint has {saved_centers[0]} classes and "
                        f"{saved_centers[1]}-D features, this one {centers[0]} classes and "
                        f"{centers[1]}-D features; resume with the settings the run was "
                        f"started with")
    for name, module in modules.items():
        try:
            load_module_state(module, state["modules"][name], name)
        except CheckpointError as error:
            raise UserError(f"--resume: {error}") from None
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(state["optimizers"][name])
    scheduler.load_state_dict(state["scheduler"])
    apply_changed_rates(settings, state["args"], optimizers, scheduler)

    progress = state["partial_epoch"]
    device = train_loader.labels.device
    if progress is not None:
        if progress["features"].size(0) != train_loader.num_samples:
            raise UserError(f"--resume: the interrupted epoch had {progress['features'].size(0)} "
                            f"training images, this run has {train_loader.num_samples}; "
                            f"resume with the same data")
        progress = EpochProgress.from_saved(progress, device)
    if not restore_rng_states(state["rng"], train_loader.generator):
        # Another kind of device draws other numbers: the shuffling cannot go on where it was.
        train_loader.generator.manual_seed(settings.seed + state["epoch"])
        print(f"Note: the run was saved on {state['rng']['loader_device']}; on {device.type} its "
              f"shuffling order is reseeded"
              + (" and the interrupted epoch starts again" if progress else ""))
        progress = None
    return History.from_saved(state["history"]), state["epoch"] + 1, progress


def apply_changed_rates(settings, saved, optimizers, scheduler):
    """Rates given anew on resume win over those restored with the optimizers."""
    if (settings.lr, settings.step_size, settings.gamma) != (saved["lr"], saved["step_size"],
                                                             saved["gamma"]):
        # The rate the schedule gives now, had the run used these settings from its start.
        lr = settings.lr * settings.gamma ** (scheduler.last_epoch // settings.step_size)
        scheduler.base_lrs, scheduler.step_size, scheduler.gamma = (
            [settings.lr], settings.step_size, settings.gamma)
        for group in optimizers["net"].param_groups:
            group.update(lr=lr, initial_lr=settings.lr)
    for group in optimizers["net"].param_groups:
        group.update(momentum=settings.momentum, weight_decay=settings.weight_decay)
    for group in optimizers["center"].param_groups:
        group["lr"] = settings.center_lr


class StateKeeper:
    """Saves a run's training state after each epoch and when it is stopped in one, and
    puts back the state that --resume names. Only the main process writes (`writes`);
    `last_good` is the newest state known to be good: the one to go back to."""

    def __init__(self, settings, path, writes, stop, model, center_loss, dnn_optimizer,
                 center_optimizer, scheduler, command, article_defaults):
        """`settings` are the run's, `path` its training state's; `stop` (StopSignals) asks
        for a stop and keeps the newest good state; `command` runs the trainer again (for the
        resume hints); `article_defaults` holds the article's settings (the trainer's
        defaults), the rates the advice on a NaN goes back to."""
        self.settings, self.path, self.writes, self.stop = settings, path, writes, stop
        self.modules = {"model": model, "center_loss": center_loss}
        self.optimizers = {"net": dnn_optimizer, "center": center_optimizer}
        self.scheduler, self.command, self.article_defaults = (scheduler, command,
                                                                 article_defaults)
        self.loader_generator = self.num_steps = self.resumed_progress = None
        self.data_std = None  # the training images' spread, for the advice on a NaN
        self.epoch = 1  # the epoch under way, for the advice on a NaN

    @property
    def last_good(self):
        """The newest training state known to be good (None: none yet), the one to go back to;
        kept by the StopSignals, whose line for a second signal names it."""
        return self.stop.last_good_state

    @last_good.setter
    def last_good(self, path):
        self.stop.last_good_state = path

    def start(self, train_loader):
        """Begin the run: anew, or from the state `settings.resume` names; from here a
        `stop` (StopSignals) waits for a step, to save the state. Returns (history, first
        epoch); an interrupted epoch's progress waits for `guarding_epoch` to hand it out.
        UserError, before training, for training images of no spread."""
        check_data_spread(train_loader.std, self.settings)
        self.data_std = train_loader.std
        self.stop.training_began()
        self.loader_generator, self.num_steps = train_loader.generator, len(train_loader)
        history, first_epoch, self.resumed_progress = History(), 1, None
        if self.settings.resume:
            history, first_epoch, self.resumed_progress = self.resume(train_loader)
        self.epoch_started(first_epoch)
        return history, first_epoch

    def resume(self, train_loader):
        path = Path(self.settings.resume)
        state = state_to_resume(path)
        history, first_epoch, progress = resume(state, self.modules, self.optimizers,
                                                self.scheduler, train_loader, self.settings)
        self.last_good = path
        where = f"epoch {first_epoch}" + (f" after step {progress.step}" if progress else "")
        print(f"Resuming from {path} at {where}")
        if first_epoch > self.settings.epochs:
            print(f"Nothing to train: the run has finished epoch {first_epoch - 1} and --epochs is "
                  f"{self.settings.epochs}; give a larger --epochs to train on")
        return history, first_epoch, progress

    def epoch_started(self, epoch):
        """Note the random states and the network's rate at the start of `epoch`: where an
        interrupted epoch restarts, and the rate the advice on a NaN names."""
        self.epoch, self.epoch_lr = epoch, self.optimizers["net"].param_groups[0]["lr"]
        self.epoch_start_rng = rng_states(self.loader_generator)

    def save(self, epoch, history):
        """The state after `epoch`, written last of the epoch's files: a run killed before
        this redoes the epoch and its files."""
        self.epoch_started(epoch + 1)
        if self.writes:
            save_training_state(self.path, epoch, self.modules, self.optimizers, self.scheduler,
                                self.epoch_start_rng, recorded_settings(self.settings), history)
        self.last_good = self.path

    def save_interrupted(self, epoch, num_steps, history, progress):
        """Save the state of `epoch`, stopped after `progress.step`; returns the message to show."""
        if self.writes and not torch.distributed.is_initialized():
            # Under torchrun each rank holds only its part of the epoch: it starts again.
            save_training_state(self.path, epoch - 1, self.modules, self.optimizers, self.scheduler,
                                self.epoch_start_rng, recorded_settings(self.settings), history,
                                progress)
            return (f"Stopped in epoch {epoch} after step {progress.step} of {num_steps}. "
                    f"{self.resume_hint(self.path)}")
        saved = self.resume_hint() if self.last_good else "No training state was saved yet."
        return f"Stopped in epoch {epoch}; it starts again on resuming. {saved}"

    @contextlib.contextmanager
    def guarding_epoch(self, epoch, history):
        """Around an epoch's training and test; yields the epoch's progress so far (an
        interrupted epoch's, once, on resuming; else None). A stop asked for in the epoch
        saves the state and ends the run; a NaN ends it with advice (`explain`)."""
        progress, self.resumed_progress = self.resumed_progress, None
        try:
            yield progress
        except TrainingInterrupted as interrupted:
            raise self.stop.stopped(self.save_interrupted(epoch, self.num_steps, history,
                                                     interrupted.progress)) from None
        except NonFiniteError as error:
            raise UserError(self.explain(error)) from None

    def stop_if_asked(self, epoch):
        """After `epoch`'s files: end the run here when a stop was asked for and epochs remain."""
        if self.stop.requested() and epoch < self.settings.epochs:
            raise self.stop.stopped(f"Stopped after epoch {epoch}. {self.resume_hint()}")

    def explain(self, error):
        """The message for a NaN `error` in the epoch under way: what went bad, the likely
        cause, and a resume from the last good state with the setting to change."""
        cause, change = remedy(error, self.settings, self.article_defaults, self.epoch_lr,
                               self.data_std)
        message = (f"{error}; the run stops without saving epoch {self.epoch}. "
                   f"The likely cause: {cause}; ")
        if change is None:  # the data: no setting of the run helps
            return message + "give --dataset_dir images whose pixels vary more"
        if self.last_good is None:
            return message + ("no training state was saved yet: start again with a lower one, "
                              f"e.g. {change}")
        return message + (f"the last good training state is {self.last_good}: resume from it "
                          f"with a lower one, e.g. {self.command} --resume "
                          f"{shlex.quote(str(self.last_good))} {change}")

    def resume_hint(self, path=None):
        path = path or self.last_good
        return (f"The training state is in {path}; to go on, run: {self.command} --resume "
                f"{shlex.quote(str(path))}")
