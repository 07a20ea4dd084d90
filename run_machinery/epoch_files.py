"""The files a run writes after each epoch, and once at its end.

Each epoch: the model's state_dict, the feature plot (through the plotter), the history
CSV with its curves, the test features of every epoch so far, and TensorBoard scalars
when asked for. At the end: the animation of the test features. Every file is written
atomically (see checkpointing.py).
"""
import functools

import torch

from . import distributed
from .background_plotter import Plotter
from .checkpointing import atomic_write, save_checkpoint
from .errors import UserError
from mnist_loader import DATASETS, class_names, normalization
from .plots import plot_curves, write_feature_gif
from .run_folder import RunLock, RunPaths, write_run_file


class EpochFiles:
    """The files of one run, in its folder (see run_folder.py). Only the main process
    writes them, and nothing is written on a dry run (`writes`)."""

    def __init__(self, settings):
        self.settings = settings
        self.paths = RunPaths.from_settings(settings)
        self.writes = distributed.is_main_process() and not settings.dry_run
        self.plotter = self.tensorboard = self.lock = None
        if self.writes:
            self.paths.check(settings.epochs)
            self.lock = RunLock(self.paths.out_dir)  # held until close(), or the process's end
            try:
                self.paths.claim(settings.epochs, resuming=bool(settings.resume), overwrite=settings.overwrite)
            except UserError:
                self.close()
                raise

    def start(self, classes, device, train_loader, test_loader, first_epoch):
        """Write run.json, open TensorBoard, and say what is trained; plots are drawn in the
        background on CUDA."""
        self.plotter = Plotter(background=device.type == "cuda")
        world_size, held_out = train_loader.world_size, self.settings.holdout_classes
        print(f"Start training on {device}" + (f" x {world_size} processes" if world_size > 1 else "")
              + f": {train_loader.num_samples * world_size} training and {test_loader.labels.size(0)} test images"
              + ("" if self.settings.dataset == "mnist" else f" of {DATASETS[self.settings.dataset].title}")
              + f", epochs {first_epoch} to {self.settings.epochs}"
              + (f", classes {held_out} held out ({', '.join(class_names(self.settings.dataset, held_out))})"
                 if held_out else ""))
        if self.writes:
            write_run_file(self.paths, self.settings, classes, device, world_size, resumed=bool(self.settings.resume))
            if self.settings.tensorboard:
                self.tensorboard = open_tensorboard(self.settings.tensorboard)

    def close(self):
        if self.lock:
            self.lock.release()
            self.lock = None

    def write_epoch(self, record, model, history, visualize, feat, digits, centers, class_directions=None):
        """The epoch's files; its plot is `visualize` (the script's) of the training features
        `feat` of `digits`, the `centers` and the epoch's test features (with an angular
        head's `class_directions`, their angular view)."""
        if self.writes:
            # A copy of the centres (on CUDA): a background plot must not see them change.
            plot = functools.partial(visualize, feat, digits, record.epoch, self.paths.visual(record.epoch),
                                     centers.detach().cpu(), history.test_features[-1], history.test_digits,
                                     self.settings.holdout_classes, class_directions,
                                     class_names(self.settings.dataset))
            write_epoch_files(self.paths, record, model, history, self.settings.holdout_classes, self.plotter, plot,
                              self.tensorboard)

    def finish(self, history, test_loader):
        """After the last epoch: wait for the last plot, write the animation (and the
        TensorBoard embedding, with the test images as thumbnails)."""
        self.plotter.wait()
        if self.writes and history.records:
            thumbnails = None
            if self.tensorboard:
                mean, std = normalization(self.settings.dataset, self.settings.dataset_dir)
                thumbnails = test_loader.images.cpu() * std + mean
            frames = write_run_end(self.paths, history, self.settings.holdout_classes, self.tensorboard, thumbnails,
                                   angular=self.settings.head != "softmax", names=class_names(self.settings.dataset))
            print(f"Wrote {frames} frames of test features to {self.paths.gif}")


def write_epoch_files(paths, record, model, history, unseen_digits, plotter, plot, tensorboard=None):
    """Write the files of the epoch of `record` (the last one of `history`). `plot` is a
    function that draws the epoch's feature plot; the plotter runs it."""
    save_checkpoint(paths.model(record.epoch), model.state_dict())
    plotter.submit(plot)
    atomic_write(paths.history, history.csv_text().encode())
    plot_curves([record.row() for record in history.records], paths.curves)
    save_checkpoint(paths.test_features, {
        "features": torch.stack(history.test_features), "digits": history.test_digits,
        "epochs": [record.epoch for record in history.records], "unseen_digits": unseen_digits})
    if tensorboard:
        for name, value in record.row().items():
            if name != "epoch":
                tensorboard.add_scalar(name, value, record.epoch)


def write_run_end(paths, history, unseen_digits, tensorboard=None, test_images=None, angular=False, names=None):
    """The animation of the test features over the epochs (with their directions for an
    `angular` head), and for TensorBoard the last epoch's features with the images
    (`test_images`, in 0-1), the classes named by `names`; returns the number of frames."""
    if tensorboard:
        metadata = [names[label] for label in history.test_digits.tolist()] if names else history.test_digits.tolist()
        tensorboard.add_embedding(history.test_features[-1], metadata=metadata,
                                  label_img=test_images, global_step=history.records[-1].epoch, tag="test_features")
        tensorboard.close()
    return write_feature_gif(torch.stack(history.test_features), history.test_digits, paths.gif, unseen_digits,
                             [record.epoch for record in history.records], angular=angular, class_names=names)


def open_tensorboard(log_dir):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package, which is not installed: "
                        "pip install tensorboard") from None
    return SummaryWriter(log_dir)
