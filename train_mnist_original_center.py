"""Train LeNets++ on MNIST with softmax + Center Loss, as in the article "MNISTでMetric Learning".

After every epoch: one line of train/test accuracy, loss and retrieval quality, a
checkpoint (the model's state_dict), a PNG of the 2-D training and test features, the
history CSV with its curves, and the full training state (training_state.pth beside the
checkpoints), from which `--resume` continues a stopped run exactly. Every file is
written atomically.
"""
import argparse
import csv
import io
import itertools
import os
import shlex
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn as nn
import torch.optim.lr_scheduler as lr_scheduler
from torch.nn.parallel import DistributedDataParallel
from matplotlib.figure import Figure
from tqdm import tqdm

import distributed
from center_loss import CenterLoss, class_counts
from checkpointing import (TRAINING_STATE_NAME, CheckpointError, WriteError, atomic_write, load_module_state,
                           load_training_state, restore_rng_states, rng_states, save_checkpoint, save_figure,
                           save_training_state)
from metrics import split_retrieval_metrics
from mnist_loader import MNIST_MEAN, MNIST_STD, REPO_DIR, DatasetError, load_dataset
from mnist_net import Net
from plots import draw_features, plot_curves, write_feature_gif

# The parts of a training step watched for NaN and infinite values.
LOSS_PARTS = ("features", "softmax loss", "centre loss")
# Settings that fix the order of the training data: a resumed run keeps them.
FIXED_ON_RESUME = ("seed", "batch_size", "max_train_samples", "holdout_classes")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """States each flag's default, unless its help already says it in words."""

    def _get_help_string(self, action):
        return action.help if "default:" in action.help else super()._get_help_string(action)


def parse_args(argv=None, defaults=None):
    """The settings; `defaults` (a resumed run's) replace the built-in defaults."""
    parser = argparse.ArgumentParser(
        description="Train LeNets++ on MNIST with softmax + Center Loss (Wen et al., ECCV 2016).",
        formatter_class=HelpFormatter)
    parser.add_argument("--dataset_dir", default=str(REPO_DIR / "datasets"),
                        help="folder with MNIST (downloaded there when missing); may also hold "
                             "the four IDX files directly, plain or .gz")
    parser.add_argument("--model_path_temp", default=str(REPO_DIR / "outputs" / "model" / "epoch_{}.pth"),
                        help="per-epoch checkpoint path; {} becomes the zero-padded epoch")
    parser.add_argument("--vis_img_path_temp", default=str(REPO_DIR / "outputs" / "visual" / "epoch_{}.png"),
                        help="per-epoch feature plot path; {} becomes the zero-padded epoch")
    parser.add_argument("--epochs", type=int, default=100, help="number of epochs")
    parser.add_argument("--batch_size", type=int, default=128,
                        help="training and test batch size; under torchrun the global training batch, "
                             "split evenly across the processes")
    parser.add_argument("--lr", type=float, default=0.001, help="learning rate of the network (SGD)")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum of the network")
    parser.add_argument("--weight_decay", type=float, default=5e-4, help="weight decay of the network")
    parser.add_argument("--step_size", type=int, default=20, help="StepLR: epochs between learning-rate decays")
    parser.add_argument("--gamma", type=float, default=0.8, help="StepLR: learning-rate decay factor")
    parser.add_argument("--center_lr", type=float, default=0.5, help="learning rate of the centres (SGD)")
    parser.add_argument("--loss_weight", type=float, default=1.0,
                        help="weight of the Center Loss in the total loss (0: softmax only)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (weights, centres, shuffling)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to train; auto takes CUDA when available")
    parser.add_argument("--max_train_samples", type=int, default=None,
                        help="use only the first N training images (quick runs, tests); default: all")
    parser.add_argument("--max_test_samples", type=int, default=None,
                        help="use only the first N test images; default: all")
    parser.add_argument("--amp", action="store_true",
                        help="bfloat16 autocast for the forward pass and the loss, on CUDA or on a CPU "
                             "with native bf16 (AVX512-BF16 or AMX); off: float32 throughout")
    parser.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=True,
                        help="keep the network's weights and activations in channels-last memory format, "
                             "in which the CPU's convolutions and pooling run faster")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the network; the first epoch then includes the compile time")
    parser.add_argument("--holdout_classes", type=int, nargs="*", default=[], metavar="DIGIT",
                        help="digits left out of training, to see where never-seen classes land "
                             "(e.g. --holdout_classes 8 9); default: none")
    parser.add_argument("--history_path", default=str(REPO_DIR / "outputs" / "history.csv"),
                        help="per-epoch figures as CSV; the curves plot goes beside it as .png")
    parser.add_argument("--tensorboard", metavar="DIR", default=None,
                        help="also log to TensorBoard in DIR (needs the tensorboard package); default: off")
    parser.add_argument("--img_show", action="store_true",
                        help="save a grid of one training batch (outputs/visual/train_batch.png) "
                             "and show it when a display exists")
    parser.add_argument("--resume", metavar="PATH", default=None,
                        help=f"continue a stopped run from its training state: a path, or 'auto' for the "
                             f"{TRAINING_STATE_NAME} in the folder of --model_path_temp. The run keeps its "
                             f"settings unless they are given again; --epochs counts all epochs, the done "
                             f"ones included; default: start a new run")
    if defaults:
        parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    check_args(args)
    return args


def fail(message):
    """Stop with one line on stderr and a non-zero exit status."""
    sys.exit(f"error: {message}")


def check_args(args):
    for name in ("epochs", "batch_size", "step_size"):
        if getattr(args, name) < 1:
            fail(f"--{name} must be at least 1, got {getattr(args, name)}")
    for name in ("lr", "center_lr", "gamma"):
        if not getattr(args, name) > 0:
            fail(f"--{name} must be positive, got {getattr(args, name)}")
    for name in ("momentum", "weight_decay", "loss_weight"):
        if not getattr(args, name) >= 0:
            fail(f"--{name} must not be negative, got {getattr(args, name)}")
    for name in ("max_train_samples", "max_test_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            fail(f"--{name} must be at least 1, got {getattr(args, name)}")
    if any(not 0 <= digit <= 9 for digit in args.holdout_classes) or len(set(args.holdout_classes)) > 8:
        fail(f"--holdout_classes takes distinct digits 0-9 and leaves at least two to train on, "
             f"got {args.holdout_classes}")
    args.holdout_classes = sorted(set(args.holdout_classes))
    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda was asked for, but CUDA is not available here (use --device cpu)")
    if args.amp and not bf16_supported(pick_device(args.device)):
        fail(f"--amp needs native bfloat16, which this {pick_device(args.device).type.upper()} lacks "
             "(on a CPU: AVX512-BF16 or AMX); train in float32 without --amp")
    for name in ("model_path_temp", "vis_img_path_temp"):
        check_path_template(name, getattr(args, name))
    check_writable("history_path", Path(args.history_path).parent)


def check_path_template(name, template):
    if "{}" not in template:
        fail(f"--{name} must contain {{}} for the epoch number, got {template!r}")
    try:
        folder = Path(epoch_path(template, 1)).parent
    except (IndexError, KeyError, ValueError) as error:
        fail(f"--{name} is not a valid path template ({error}): {template!r}")
    check_writable(name, folder)


def check_writable(name, folder):
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        fail(f"--{name}: cannot write to the folder {folder} ({error.strerror or error})")


def epoch_path(template, epoch):
    return template.format(f"{epoch:03d}")


def pick_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def bf16_supported(device):
    """Whether bfloat16 runs natively (fast) on `device`; emulated bf16 would be slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def speed_setup(model, device, channels_last=False):
    """Apply the speed settings to `model` (in place) and to the backends."""
    if device.type == "cuda":
        # Inputs have a fixed shape, so cuDNN's autotuning pays off after the first batch.
        torch.backends.cudnn.benchmark = True
        # TF32 for the float32 matrix multiplies (cuDNN's convolutions use it by default).
        torch.backends.cuda.matmul.fp32_precision = "tf32"
    if channels_last:
        # Only the weights: a 1-channel image has the same layout in both formats, and the
        # convolutions follow the weights' format from the first layer on.
        model.to(memory_format=torch.channels_last)


def digit_to_class(classes, device):
    """Lookup tensor: digit -> index of its class in the model's outputs, -1 if held out."""
    lookup = torch.full((10,), -1, dtype=torch.long)
    lookup[[int(name) for name in classes]] = torch.arange(len(classes))
    return lookup.to(device)


class TrainingInterrupted(Exception):
    """A stop was asked for during an epoch; `progress` holds the epoch up to its last step."""

    def __init__(self, progress):
        super().__init__(f"stopped after step {progress['step']}")
        self.progress = progress


class NonFiniteError(Exception):
    """`parts` (of LOSS_PARTS, or "weights") became NaN or infinite at `step` of `epoch`."""

    def __init__(self, epoch, step, num_steps, parts):
        names = [f"the {part}" for part in parts]
        names = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
        super().__init__(f"{names} became NaN or infinite in epoch {epoch} at step {step} of {num_steps}")
        self.parts = parts


def check_finite(first_bad_step, parameters, epoch, step, num_steps):
    """Raise NonFiniteError when a part of a step, or a weight after `step`, was not finite.
    Waits for the device: called once per epoch, and when a stop is asked for."""
    weights_finite = torch.stack([parameter.isfinite().all() for parameter in parameters]).all()
    # Every rank stops together, on the first bad step of any of them.
    bad_steps = distributed.min_across_ranks(torch.where(first_bad_step >= 0, first_bad_step, 2 ** 30)).tolist()
    bad_steps = [step if step < 2 ** 30 else -1 for step in bad_steps]
    if max(bad_steps) >= 0:
        first = min(bad for bad in bad_steps if bad >= 0)
        raise NonFiniteError(epoch, first, num_steps,
                             [part for part, bad in zip(LOSS_PARTS, bad_steps) if bad == first])
    if not weights_finite:
        raise NonFiniteError(epoch, step, num_steps, ["weights"])


def train(model, center_loss, nll_loss, loss_weight, optimizers, train_loader, class_of_digit, epoch,
          progress=None, stop_requested=lambda: False, amp=False):
    """One epoch. Returns the figures {acc, loss, center_loss} (means per image) and the
    features and digits of every training image in the order seen, on the host.

    Under torchrun, `model` is the DistributedDataParallel-wrapped net: the figures are
    those of all ranks together, the features those of all ranks, rank by rank.
    With `amp`, the forward pass and the loss run under bfloat16 autocast.

    Raises NonFiniteError when a loss, a feature or a weight became NaN or infinite, and
    TrainingInterrupted after a step (not the last) at which `stop_requested()` is true.
    The interrupted epoch goes on exactly when its `progress` is given back with the
    loader's generator in its state from the start of the epoch.
    """
    model.train()
    device = train_loader.labels.device
    num_samples = train_loader.num_samples
    num_steps = len(train_loader)
    if progress is None:
        progress = {"step": 0,
                    "features": torch.empty(num_samples, center_loss.feat_dim, device=device),
                    "digits": torch.empty(num_samples, dtype=torch.long, device=device),
                    "sums": torch.zeros(3, device=device)}  # correct, loss, centre-loss part
    features, digits_seen, sums = progress["features"], progress["digits"], progress["sums"]
    # For each of LOSS_PARTS, the first step at which it was not finite (-1: none); kept on
    # the device, so that watching costs no host sync per step.
    first_bad_step = torch.full((len(LOSS_PARTS),), -1, device=device)
    parameters = [*model.parameters(), *center_loss.parameters()]
    start = progress["step"] * train_loader.batch_size
    # The steps done before an interruption are skipped: the shuffled order is the same.
    batches = itertools.islice(train_loader, progress["step"], None)
    for step, (images, digits) in enumerate(
            tqdm(batches, desc=f"Epoch {epoch:>3}", total=num_steps, initial=progress["step"], leave=False,
                 disable=None), start=progress["step"] + 1):
        targets = class_of_digit[digits]
        # Split across ranks, the centre update still divides by the class counts of the whole batch.
        counts = distributed.sum_across_ranks(class_counts(targets, center_loss.num_classes)) \
            if train_loader.world_size > 1 else None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            feat, log_probs = model(images)
            softmax_loss = nll_loss(log_probs, targets)
            center = center_loss(targets, feat, counts)
            loss = softmax_loss + loss_weight * center
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # The centres live outside DDP: average their gradients as DDP does the net's.
        distributed.average_gradients(center_loss.parameters())
        for optimizer in optimizers:
            optimizer.step()
        finite = torch.stack((feat.isfinite().all(), softmax_loss.isfinite(), center.isfinite()))
        first_bad_step = torch.where(finite | (first_bad_step >= 0), first_bad_step, step)
        # Sums stay on the device: no host sync until the epoch's line is printed.
        end = start + digits.size(0)
        features[start:end] = feat.detach()
        digits_seen[start:end] = digits
        sums += torch.stack([(log_probs.argmax(1) == targets).sum().float(),
                             loss.detach() * digits.size(0), center.detach() * digits.size(0)])
        start = end
        progress["step"] = step
        if stop_requested() and step < num_steps:
            check_finite(first_bad_step, parameters, epoch, step, num_steps)
            raise TrainingInterrupted(progress)
    # The one host sync of the epoch: the figures are printed.
    check_finite(first_bad_step, parameters, epoch, num_steps, num_steps)
    correct, loss_sum, center_sum = (distributed.sum_across_ranks(sums.clone())
                                     / (num_samples * train_loader.world_size)).tolist()
    figures = {"acc": correct, "loss": loss_sum, "center_loss": center_sum}
    return figures, distributed.gather_rows(features).cpu(), distributed.gather_rows(digits_seen).cpu()


@torch.no_grad()
def embed(model, loader, amp=False):
    """Features, log-probabilities and labels of every image `loader` gives, in order, on
    its device (in float32, also under `amp`'s bfloat16 autocast)."""
    model.eval()
    features = log_probs = None
    labels = torch.empty(loader.num_samples, dtype=torch.long, device=loader.labels.device)
    start = 0
    for images, batch_labels in loader:
        end = start + images.size(0)
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
            batch_features, batch_log_probs = model(images)
        if features is None:  # sized from the outputs: `model` may be a wrapped or compiled net
            features = images.new_empty(loader.num_samples, batch_features.size(1))
            log_probs = images.new_empty(loader.num_samples, batch_log_probs.size(1))
        features[start:end], log_probs[start:end] = batch_features, batch_log_probs
        labels[start:end] = batch_labels
        start = end
    return features, log_probs, labels


@torch.no_grad()
def test(model, center_loss, nll_loss, loss_weight, test_loader, class_of_digit, amp=False):
    """Figures {acc, loss, center_loss} on the test images of the trained digits (means per
    image of the training objective), and the features and digits of all test images, on
    the device (under torchrun: of all ranks' parts together)."""
    features, log_probs, digits = embed(model, test_loader, amp)
    targets = class_of_digit[digits]
    seen = targets >= 0  # held-out digits have no class to be scored against
    count = seen.sum()
    center = center_loss(targets[seen], features[seen]) if count else features.new_zeros(())
    loss = (nll_loss(log_probs[seen], targets[seen]) + loss_weight * center) if count else center
    correct = (log_probs[seen].argmax(1) == targets[seen]).sum()
    sums = distributed.sum_across_ranks(torch.stack([correct.float(), loss * count, center * count, count.float()]))
    # Host sync: the figures are printed.
    correct, loss, center, count = sums.tolist()
    count = max(count, 1)
    figures = {"acc": correct / count, "loss": loss / count, "center_loss": center / count}
    return figures, distributed.gather_rows(features), distributed.gather_rows(digits)


def visualize(feat, labels, epoch, path, centers=None, test_feat=None, test_labels=None,
              center_digits=None, unseen_digits=()):
    """Write the feature plot of one epoch to a PNG at `path`: the training features
    with the centres, and beside them the test features when given."""
    panels = 1 if test_feat is None else 2
    fig = Figure(figsize=(8 * panels, 7), dpi=100)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    draw_features(axes[0], feat, labels, centers, center_digits, unseen_digits)
    axes[0].set_title(f"training features, epoch = {epoch}")
    if test_feat is not None:
        draw_features(axes[1], test_feat, test_labels, centers, center_digits, unseen_digits)
        axes[1].set_title(f"test features (eval mode), epoch = {epoch}")
    fig.subplots_adjust(left=0.1 / panels, right=1 - 0.16 / panels, wspace=0.35)
    save_figure(fig, path)


def epoch_line(epoch, train_figures, test_figures, retrieval):
    line = (f"Epoch: {epoch:>3}, train acc: {train_figures['acc']:.4f}, train loss: {train_figures['loss']:.4f}, "
            f"test acc: {test_figures['acc']:.4f}, test loss: {test_figures['loss']:.4f}, "
            f"test MAP@R: {retrieval['map_at_r']:.4f}")
    if "unseen_map_at_r" in retrieval:
        line += f", unseen MAP@R: {retrieval['unseen_map_at_r']:.4f}"
    return line


def write_history(history, path):
    """The per-epoch figures as CSV, and the curves plot beside it (same name, .png)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write(path, text.getvalue().encode())
    plot_curves(history, Path(path).with_suffix(".png"))


def open_tensorboard(log_dir):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        fail("--tensorboard needs the tensorboard package, which is not installed: pip install tensorboard")
    return SummaryWriter(log_dir)


def training_state_path(model_path_temp):
    """Where a run keeps its training state: beside its per-epoch checkpoints."""
    return Path(epoch_path(model_path_temp, 1)).parent / TRAINING_STATE_NAME


def read_resume_state(args):
    """The path and content of the training state that --resume names."""
    path = training_state_path(args.model_path_temp) if args.resume == "auto" else Path(args.resume)
    if args.resume == "auto" and not path.is_file():
        fail(f"--resume auto: there is no {path.name} in {path.parent} (the folder of --model_path_temp), "
             f"so there is no run to continue there; start one without --resume, or give --resume PATH")
    try:
        return path, load_training_state(path)
    except CheckpointError as error:
        fail(f"--resume: {error}")


def resume_args(argv, args, saved_args):
    """The settings of a resumed run: those it was started with, but for the flags given now."""
    saved = {name: value for name, value in saved_args.items() if name in vars(args) and name != "resume"}
    resumed = parse_args(argv, defaults=saved)
    changed = [name for name, value in saved.items() if getattr(resumed, name) != value and name != "epochs"]
    for name in changed:
        if name in FIXED_ON_RESUME:
            fail(f"--resume: --{name} {getattr(resumed, name)} differs from the run's {saved[name]}; it fixes "
                 f"the order of the training data, so a resumed run keeps it (start a new run to change it)")
    if changed:
        print("Resuming with changed settings: "
              + ", ".join(f"--{name} {getattr(resumed, name)} (was {saved[name]})" for name in changed))
    return resumed


def restore_training_state(state, modules, optimizers, scheduler, train_loader, args):
    """Load a saved training state into the objects of this run and return
    (history, first epoch to train, progress of the interrupted epoch or None)."""
    saved_centers = state["modules"]["center_loss"]["centers"].shape
    centers = modules["center_loss"].centers.shape
    if saved_centers != centers:
        fail(f"--resume: the run in the checkpoint has {saved_centers[0]} classes and {saved_centers[1]}-D "
             f"features, this one {centers[0]} classes and {centers[1]}-D features; resume with the "
             f"settings the run was started with")
    try:
        for name, module in modules.items():
            load_module_state(module, state["modules"][name], name)
    except CheckpointError as error:
        fail(f"--resume: {error}")
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(state["optimizers"][name])
    scheduler.load_state_dict(state["scheduler"])
    apply_changed_rates(args, state["args"], optimizers, scheduler)

    progress = state["partial_epoch"]
    if progress is not None and progress["features"].size(0) != train_loader.num_samples:
        fail(f"--resume: the interrupted epoch had {progress['features'].size(0)} training images, "
             f"this run has {train_loader.num_samples}; resume with the same data")
    if not restore_rng_states(state["rng"], train_loader.generator):
        # Another kind of device draws other numbers: the shuffling cannot go on where it was.
        train_loader.generator.manual_seed(args.seed + state["epoch"])
        print(f"Note: the run was saved on {state['rng']['loader_device']}; on {train_loader.labels.device.type} "
              f"its shuffling order is reseeded" + (" and the interrupted epoch starts again" if progress else ""))
        progress = None
    if progress is not None:
        progress = {name: value.to(train_loader.labels.device) if torch.is_tensor(value) else value
                    for name, value in progress.items()}
    return state["history"], state["epoch"] + 1, progress


def apply_changed_rates(args, saved_args, optimizers, scheduler):
    """Rates given anew on resume win over those restored with the optimizers."""
    if (args.lr, args.step_size, args.gamma) != (saved_args["lr"], saved_args["step_size"], saved_args["gamma"]):
        # The rate the schedule gives now, had the run used these settings from its start.
        lr = args.lr * args.gamma ** (scheduler.last_epoch // args.step_size)
        scheduler.base_lrs, scheduler.step_size, scheduler.gamma = [args.lr], args.step_size, args.gamma
        for group in optimizers["net"].param_groups:
            group.update(lr=lr, initial_lr=args.lr)
    for group in optimizers["net"].param_groups:
        group.update(momentum=args.momentum, weight_decay=args.weight_decay)
    for group in optimizers["center"].param_groups:
        group["lr"] = args.center_lr


class StopSignals:
    """Inside `with`: a first Ctrl-C (SIGINT) or SIGTERM asks training to stop after the
    current step (see `requested`); a second one stops at once (KeyboardInterrupt)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, world_size=1):
        self.signum = None
        self.world_size = world_size

    def __enter__(self):
        self.previous = {signum: signal.signal(signum, self.handle) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc_info):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        # os.write, not print: the handler may run while the program is printing.
        os.write(2, f"\n{signal.Signals(signum).name}: stopping after the current step to save the "
                    f"training state; press Ctrl-C again to quit at once\n".encode())

    def requested(self):
        """Whether to stop now; under torchrun, whether any rank was signalled, so that all
        stop after the same step."""
        if self.world_size > 1:
            return distributed.any_rank(self.signum is not None)
        return self.signum is not None

    def exit(self, message, show=True):
        """Print `message` (when `show`) and end with the status a shell gives the signal
        (128 + its number)."""
        if show:
            print(message, file=sys.stderr, flush=True)
        distributed.teardown()
        sys.exit(128 + (self.signum or signal.SIGTERM))


def resume_hint(state_path):
    script = os.path.relpath(__file__)
    if script.startswith(os.pardir):
        script = __file__
    return (f"The training state is in {state_path}; to go on, run: "
            f"python3 {shlex.quote(script)} --resume {shlex.quote(str(state_path))}")


def non_finite_message(error, args, last_good):
    flag = "center_lr" if error.parts == ["centre loss"] else "lr"
    rate = getattr(args, flag)
    message = (f"{error}; the run stops without saving that epoch. The likely cause is a learning rate "
               f"too high (--{flag} {rate:g}); ")
    if last_good is None:
        return message + "no training state was saved yet: start again with a lower one"
    return message + (f"the last good training state is {last_good}: resume from it with a lower one, "
                      f"e.g. --resume {shlex.quote(str(last_good))} --{flag} {rate / 10:g}")


class Plotter:
    """Runs the per-epoch plotting. With `background` (on CUDA) it runs in a worker thread,
    so the GPU does not wait for matplotlib; the caller passes copies of what training
    goes on changing. On a CPU the cores are busy training anyway: it runs at once.
    At most one call is pending; its error, if any, is raised by the next `submit` or
    by `wait`."""

    def __init__(self, background):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plotter") if background else None
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


def write_epoch_files(args, epoch, model, center_loss, features, digits, test_features, test_digits, class_digits,
                      history, tensorboard, plotter):
    """The files of one epoch: checkpoint, feature plot, history and curves, test features."""
    unseen_digits = args.holdout_classes
    save_checkpoint(epoch_path(args.model_path_temp, epoch), model.state_dict())
    # A copy of the centres: training goes on changing them while a background plot runs.
    plotter.submit(visualize, features, digits, epoch, epoch_path(args.vis_img_path_temp, epoch),
                   center_loss.centers.detach().cpu().clone(), test_features, test_digits, class_digits,
                   unseen_digits)
    write_history(history["rows"], args.history_path)
    save_checkpoint(Path(epoch_path(args.vis_img_path_temp, epoch)).parent / "test_features.pt", {
        "features": torch.stack(history["test_features"]), "digits": test_digits,
        "epochs": [row["epoch"] for row in history["rows"]], "unseen_digits": unseen_digits})
    if tensorboard:
        for name, value in history["rows"][-1].items():
            if name != "epoch":
                tensorboard.add_scalar(name, value, epoch)


def say(message):
    """Print on rank 0 only (every process when not distributed is rank 0)."""
    if distributed.is_main_process():
        print(message, flush=True)


def main(argv=None):
    args = parse_args(argv)
    state = None
    if args.resume:
        resume_path, state = read_resume_state(args)
        args = resume_args(argv, args, state["args"])
    rank, world_size, device = distributed.setup(pick_device(args.device))
    if args.batch_size % world_size:
        fail(f"--batch_size {args.batch_size} is the global batch and must be divisible by the "
             f"{world_size} processes")
    # The same seed on every rank: the same initial weights and centres, the same shuffling.
    torch.manual_seed(args.seed)
    try:
        train_loader, test_loader, classes = load_dataset(
            args.dataset_dir, args.batch_size, args.batch_size, img_show=args.img_show and rank == 0,
            device=device, seed=args.seed, max_train_samples=args.max_train_samples,
            max_test_samples=args.max_test_samples, holdout_classes=args.holdout_classes,
            rank=rank, world_size=world_size)
    except (DatasetError, WriteError) as error:
        fail(str(error))
    # Only rank 0 prints and writes files.
    is_writer = rank == 0
    tensorboard = open_tensorboard(args.tensorboard) if args.tensorboard and is_writer else None

    model = Net(num_classes=len(classes)).to(device)
    center_loss = CenterLoss(len(classes), 2).to(device)
    nll_loss = nn.NLLLoss()
    optimizer_net = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                    weight_decay=args.weight_decay)
    optimizer_center = torch.optim.SGD(center_loss.parameters(), lr=args.center_lr)
    scheduler = lr_scheduler.StepLR(optimizer_net, step_size=args.step_size, gamma=args.gamma)
    speed_setup(model, device, channels_last=args.channels_last)
    # Checkpoints take the plain model's weights (no `module.` prefix); the steps go through
    # DDP and torch.compile when asked for.
    step_model = DistributedDataParallel(model) if world_size > 1 else model
    if args.compile:
        step_model = torch.compile(step_model)
    modules = {"model": model, "center_loss": center_loss}
    optimizers = {"net": optimizer_net, "center": optimizer_center}
    class_of_digit = digit_to_class(classes, device)
    class_digits = [int(name) for name in classes]
    unseen_digits = args.holdout_classes
    visual_dir = Path(epoch_path(args.vis_img_path_temp, 1)).parent
    state_path = training_state_path(args.model_path_temp)
    # The newest training state known to be good: the one to go back to.
    last_good = None
    # The figures of every epoch (the rows of the CSV) and its test features (the animation).
    history, first_epoch, progress = {"rows": [], "test_features": []}, 1, None
    if state is not None:
        history, first_epoch, progress = restore_training_state(
            state, modules, optimizers, scheduler, train_loader, args)
        if progress is not None and world_size > 1:
            fail(f"--resume: {resume_path} was stopped in the middle of epoch {first_epoch} by a single process; "
                 f"finish that epoch without torchrun (add --epochs {first_epoch}), then resume under torchrun")
        last_good = resume_path
        where = f"epoch {first_epoch}" + (f" after step {progress['step']}" if progress else "")
        say(f"Resuming from {resume_path} at {where}")
        if first_epoch > args.epochs:
            say(f"Nothing to train: the run has finished epoch {first_epoch - 1} and --epochs is {args.epochs}; "
                f"give a larger --epochs to train on")
            return

    if args.compile:
        say("torch.compile: the first epoch includes compiling the network")
    plotter = Plotter(background=device.type == "cuda")
    with StopSignals(world_size) as stop:
        try:
            say(f"Training on {device}" + (f" x {world_size} processes" if world_size > 1 else "")
                + f": {train_loader.num_samples * world_size} training and {test_loader.labels.size(0)} test "
                f"images, {args.epochs} epochs" + (f", digits {unseen_digits} held out" if unseen_digits else ""))
            for epoch in range(first_epoch, args.epochs + 1):
                started = time.perf_counter()
                lr = optimizer_net.param_groups[0]["lr"]
                rng_at_epoch_start = rng_states(train_loader.generator)
                try:
                    train_figures, features, digits = train(
                        step_model, center_loss, nll_loss, args.loss_weight, (optimizer_net, optimizer_center),
                        train_loader, class_of_digit, epoch, progress, stop.requested, amp=args.amp)
                except TrainingInterrupted as interrupted:
                    if world_size > 1:
                        # Each rank holds only its part of the epoch: go back to the epoch's start.
                        stop.exit(f"Stopped in epoch {epoch}; it starts again on resuming. "
                                  f"{resume_hint(last_good) if last_good else 'No training state was saved yet.'}",
                                  is_writer)
                    save_training_state(state_path, epoch - 1, modules, optimizers, scheduler, rng_at_epoch_start,
                                        vars(args), history, interrupted.progress)
                    stop.exit(f"Stopped in epoch {epoch} after step {interrupted.progress['step']} of "
                              f"{len(train_loader)}. {resume_hint(state_path)}")
                except NonFiniteError as error:
                    fail(non_finite_message(error, args, last_good))
                progress = None
                # After the epoch's optimizer steps, as PyTorch >= 1.1 requires.
                scheduler.step()
                test_figures, test_features, test_digits = test(step_model, center_loss, nll_loss,
                                                                args.loss_weight, test_loader, class_of_digit,
                                                                amp=args.amp)
                retrieval = split_retrieval_metrics(test_features, test_digits, unseen_digits)
                test_features, test_digits = test_features.cpu(), test_digits.cpu()
                say(epoch_line(epoch, train_figures, test_figures, retrieval))

                row = {"epoch": epoch, "lr": lr, "center_lr": optimizer_center.param_groups[0]["lr"]}
                row.update({f"train_{name}": value for name, value in train_figures.items()})
                row.update({f"test_{name}": value for name, value in test_figures.items()})
                row.update(retrieval)
                row["seconds"] = time.perf_counter() - started
                history["rows"].append(row)
                history["test_features"].append(test_features)
                if is_writer:
                    write_epoch_files(args, epoch, model, center_loss, features, digits, test_features, test_digits,
                                      class_digits, history, tensorboard, plotter)
                    # Written last: a run killed before this line redoes the epoch and its files.
                    save_training_state(state_path, epoch, modules, optimizers, scheduler,
                                        rng_states(train_loader.generator), vars(args), history)
                last_good = state_path
                if stop.requested() and epoch < args.epochs:
                    stop.exit(f"Stopped after epoch {epoch}. {resume_hint(state_path)}", is_writer)

            plotter.wait()
            if is_writer:
                gif_path = visual_dir / "features.gif"
                frames = write_feature_gif(torch.stack(history["test_features"]), test_digits, gif_path,
                                           unseen_digits, [row["epoch"] for row in history["rows"]])
                say(f"Wrote {frames} frames of test features to {gif_path}")
            if tensorboard:
                thumbnails = test_loader.images.cpu() * MNIST_STD + MNIST_MEAN
                tensorboard.add_embedding(history["test_features"][-1], metadata=test_digits.tolist(),
                                          label_img=thumbnails, global_step=args.epochs, tag="test_features")
                tensorboard.close()
        except KeyboardInterrupt:
            stop.exit("Stopped at once by a second signal; " + (
                f"the last training state saved is {last_good}" if last_good else "no training state was saved"),
                is_writer)
        except WriteError as error:
            fail(str(error))
        finally:
            plotter.wait()
    distributed.teardown()


if __name__ == "__main__":
    main()
