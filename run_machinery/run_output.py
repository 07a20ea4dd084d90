"""A run's output: its folder claimed and locked, run.json and the line that starts the run,
the files it writes after each epoch and once at its end, and TensorBoard's log.

Each epoch: the model's state_dict, the feature plot (through the Plotter), the history
CSV with its curves, the test features of every epoch so far, and TensorBoard scalars
when asked for. At the end: the animation of the test features. Every file is written
atomically (see checkpointing.py).
"""
from concurrent.futures import ThreadPoolExecutor

import torch

from mnist_loader import DATASETS

from . import distributed
from .checkpointing import atomic_write, load_checkpoint, save_checkpoint
from .errors import UserError
from .output_paths import check_run_outputs
from .plots import plot_curves, show_batch, write_feature_gif
from .run_file import write_run_file
from .run_folder import RunLock, RunPaths
from .tensorboard_log import open_tensorboard


class RunOutput:
    """The output of one run: its files, in its folder (see run_folder.py), and TensorBoard's
    log. Only the main process writes them, and nothing is written on a dry run (`writes`)."""

    def __init__(self, settings):
        self.settings = settings
        self.paths = RunPaths.from_settings(settings)
        self.writes = distributed.is_main_process() and not settings.dry_run
        self.plotter = self.tensorboard = self.lock = None
        if self.writes:
            check_run_outputs(self.paths, settings.epochs, settings.dataset,
                              settings.dataset_dir)
            self.lock = RunLock(self.paths.out_dir)  # held until close(), or the process's end
            try:
                self.paths.claim(resuming=bool(settings.resume), overwrite=settings.overwrite)
            except UserError:
                self.close()
                raise

    def start(self, classes, device, train_loader, test_loader, first_epoch):
        """Write run.json (and with --img_show the first training images), open TensorBoard,
        and say what is trained; plots are drawn in the background on CUDA."""
        self.plotter = Plotter(background=device.type == "cuda")
        world_size, holdout_classes = train_loader.world_size, self.settings.holdout_classes
        print(f"Start training on {device}"
              + (f" x {world_size} processes" if world_size > 1 else "")
              + f": {train_loader.num_samples * world_size} training and "
                f"{test_loader.labels.size(0)} test images"
              + ("" if self.settings.dataset == "mnist"
                 else f" of {DATASETS[self.settings.dataset].title}")
              + f", epochs {first_epoch} to {self.settings.epochs}"
              + (f", classes {holdout_classes} held out "
                 f"({', '.join(train_loader.class_names[label] for label in holdout_classes)})"
                 if holdout_classes else ""))
        if self.writes and self.settings.img_show:  # the article's look at its training images
            # The first images: a shuffled batch would draw from the training order.
            images = train_loader.images[:train_loader.batch_size].cpu()
            show_batch(train_loader.pixels(images), self.paths.train_batch, show=True)
        if self.writes:
            write_run_file(self.paths, self.settings, classes, train_loader, device,
                           resumed=bool(self.settings.resume))
            if self.settings.tensorboard:
                self.tensorboard = open_tensorboard(self.settings.tensorboard)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        """Release the folder's lock: another run may use the folder."""
        if self.lock:
            self.lock.release()
            self.lock = None

    def plot(self, draw, *args, **kwargs):
        """Have the epoch's feature plot drawn: `draw(*args, **kwargs)`, through the plotter
        (in the background on CUDA: pass it copies of what training goes on changing)."""
        if self.writes:
            self.plotter.submit(draw, *args, **kwargs)

    def write_epoch(self, record, model, history):
        """The epoch's other files: the checkpoint, the history and its curves, the test
        features so far, TensorBoard's scalars."""
        if self.writes:
            write_epoch_files(self.paths, record, model, history, self.settings.holdout_classes,
                              self.tensorboard)

    def finish(self, history, test_loader):
        """After the last epoch: wait for the last plot, write the animation (and the
        TensorBoard embedding, with the test images as thumbnails)."""
        self.plotter.wait()
        if self.writes and history.records:
            thumbnails = None
            if self.tensorboard:
                thumbnails = test_loader.pixels(test_loader.images.cpu())
            frames = write_run_end(self.paths, history, self.settings.holdout_classes,
                                   self.tensorboard, thumbnails,
                                   angular=self.settings.head != "softmax",
                                   names=test_loader.class_names)
            print(f"Wrote {frames} frames of test features to {self.paths.gif}")


def write_epoch_files(paths, record, model, history, holdout_classes, tensorboard=None):
    """Write the files of the epoch of `record` (the last one of `history`) but its plot."""
    save_checkpoint(paths.model(record.epoch), model.state_dict())
    atomic_write(paths.history, history.csv_text().encode())
    plot_curves([record.row() for record in history.records], paths.curves)
    save_checkpoint(paths.test_features, {
        "features": torch.stack(history.test_features), "digits": history.test_labels,
        "epochs": [record.epoch for record in history.records], "holdout_classes": holdout_classes})
    if tensorboard:
        for name, value in record.row().items():
            if name != "epoch":
                tensorboard.add_scalar(name, value, record.epoch)


def read_test_features(path):
    """The test features of every epoch that `write_epoch_files` saved in `path`: a dict of
    features (epochs x images x width), digits (the labels), epochs and holdout_classes
    (files written before that name: unseen_digits); UserError for another file."""
    saved = load_checkpoint(path)
    if not isinstance(saved, dict) or not {"features", "digits", "epochs"} <= saved.keys():
        raise UserError(f"{path} is not a test_features.pt written by the trainer")
    holdout_classes = saved.get("holdout_classes", saved.get("unseen_digits", []))
    return {**saved, "holdout_classes": holdout_classes}


def write_run_end(paths, history, holdout_classes, tensorboard=None, test_images=None,
                  angular=False, names=None):
    """The animation of the test features over the epochs (with their directions for an
    `angular` head), and for TensorBoard the last epoch's features with the images
    (`test_images`, in 0-1), the classes named by `names`; returns the number of frames."""
    if tensorboard:
        metadata = ([names[label] for label in history.test_labels.tolist()] if names
                    else history.test_labels.tolist())
        tensorboard.add_embedding(history.test_features[-1], metadata=metadata,
                                  label_img=test_images, global_step=history.records[-1].epoch,
                                  tag="test_features")
        tensorboard.close()
    return write_feature_gif(torch.stack(history.test_features), history.test_labels, paths.gif,
                             holdout_classes, [record.epoch for record in history.records],
                             angular=angular, class_names=names)


class Plotter:
    """Draws the per-epoch plots; with `background` (on CUDA) in a worker thread, so the
    GPU does not wait for matplotlib. On a CPU the cores are busy training anyway: the plot
    is drawn at once. At most one call is pending; its error, if any, is raised by the next
    `submit` or by `wait`."""

    def __init__(self, background):
        self._executor = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="plotter")
                          if background else None)
        self._pending = None

    def submit(self, function, *args, **kwargs):
        self.wait()
        if self._executor is None:
            function(*args, **kwargs)
        else:
            self._pending = self._executor.submit(function, *args, **kwargs)

    def wait(self):
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()
