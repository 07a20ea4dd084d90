"""Train LeNets++ on MNIST with softmax + Center Loss, as in the article "MNISTでMetric Learning".

After every epoch: one line of train/test accuracy and loss, a checkpoint (the
model's state_dict), a PNG scatter plot of the 2-D training features and the full
training state (training_state.pth beside the checkpoints), from which `--resume`
continues a stopped run exactly. Every file is written atomically.
"""
import argparse
import io
import itertools
import os
import shlex
import signal
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn as nn
import torch.optim.lr_scheduler as lr_scheduler
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from tqdm import tqdm

from center_loss import CenterLoss
from checkpointing import (TRAINING_STATE_NAME, CheckpointError, WriteError, atomic_write, load_module_state,
                           load_training_state, restore_rng_states, rng_states, save_checkpoint,
                           save_training_state)
from mnist_loader import REPO_DIR, DatasetError, load_dataset
from mnist_net import Net

# The parts of a training step watched for NaN and infinite values.
LOSS_PARTS = ("features", "softmax loss", "centre loss")
# Settings that fix the order of the training data: a resumed run keeps them.
FIXED_ON_RESUME = ("seed", "batch_size", "max_train_samples")

# The article's ten colours, one per digit 0-9.
DIGIT_COLORS = ("#ff0000", "#ffff00", "#00ff00", "#00ffff", "#0000ff",
                "#ff00ff", "#990000", "#999900", "#009900", "#009999")


def parse_args(argv=None, defaults=None):
    """The settings; `defaults` (a resumed run's) replace the built-in defaults."""
    parser = argparse.ArgumentParser(
        description="Train LeNets++ on MNIST with softmax + Center Loss (Wen et al., ECCV 2016).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset_dir", default=str(REPO_DIR / "datasets"),
                        help="folder with MNIST (downloaded there when missing); may also hold "
                             "the four IDX files directly, plain or .gz")
    parser.add_argument("--model_path_temp", default=str(REPO_DIR / "outputs" / "model" / "epoch_{}.pth"),
                        help="per-epoch checkpoint path; {} becomes the zero-padded epoch")
    parser.add_argument("--vis_img_path_temp", default=str(REPO_DIR / "outputs" / "visual" / "epoch_{}.png"),
                        help="per-epoch feature plot path; {} becomes the zero-padded epoch")
    parser.add_argument("--epochs", type=int, default=100, help="number of epochs")
    parser.add_argument("--batch_size", type=int, default=128, help="training and test batch size")
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
    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda was asked for, but CUDA is not available here (use --device cpu)")
    for name in ("model_path_temp", "vis_img_path_temp"):
        check_path_template(name, getattr(args, name))


def check_path_template(name, template):
    if "{}" not in template:
        fail(f"--{name} must contain {{}} for the epoch number, got {template!r}")
    try:
        folder = Path(epoch_path(template, 1)).parent
    except (IndexError, KeyError, ValueError) as error:
        fail(f"--{name} is not a valid path template ({error}): {template!r}")
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
    bad_steps = first_bad_step.tolist()
    if max(bad_steps) >= 0:
        first = min(bad for bad in bad_steps if bad >= 0)
        raise NonFiniteError(epoch, first, num_steps,
                             [part for part, bad in zip(LOSS_PARTS, bad_steps) if bad == first])
    if not weights_finite:
        raise NonFiniteError(epoch, step, num_steps, ["weights"])


def train(model, center_loss, nll_loss, loss_weight, optimizers, train_loader, epoch,
          progress=None, stop_requested=lambda: False):
    """One epoch. Returns (accuracy, mean loss, features, labels) with the features
    and labels of every training image, in the order they were seen, on the host.

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
                    "labels": torch.empty(num_samples, dtype=torch.long, device=device),
                    "loss_sum": torch.zeros((), device=device),
                    "correct": torch.zeros((), dtype=torch.long, device=device)}
    features, labels_seen = progress["features"], progress["labels"]
    loss_sum, correct = progress["loss_sum"], progress["correct"]
    # For each of LOSS_PARTS, the first step at which it was not finite (-1: none); kept on
    # the device, so that watching costs no host sync per step.
    first_bad_step = torch.full((len(LOSS_PARTS),), -1, device=device)
    parameters = [*model.parameters(), *center_loss.parameters()]
    start = progress["step"] * train_loader.batch_size
    # The steps done before an interruption are skipped: the shuffled order is the same.
    batches = itertools.islice(train_loader, progress["step"], None)
    for step, (images, labels) in enumerate(
            tqdm(batches, desc=f"Epoch {epoch:>3}", total=num_steps, initial=progress["step"], leave=False,
                 disable=None), start=progress["step"] + 1):
        feat, log_probs = model(images)
        softmax_loss = nll_loss(log_probs, labels)
        centre_loss = center_loss(labels, feat)
        loss = softmax_loss + loss_weight * centre_loss
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        finite = torch.stack((feat.isfinite().all(), softmax_loss.isfinite(), centre_loss.isfinite()))
        first_bad_step = torch.where(finite | (first_bad_step >= 0), first_bad_step, step)
        # Sums stay on the device: no host sync until the epoch's line is printed.
        end = start + labels.size(0)
        features[start:end] = feat.detach()
        labels_seen[start:end] = labels
        loss_sum += loss.detach() * labels.size(0)
        correct += (log_probs.argmax(1) == labels).sum()
        start = end
        progress["step"] = step
        if stop_requested() and step < num_steps:
            check_finite(first_bad_step, parameters, epoch, step, num_steps)
            raise TrainingInterrupted(progress)
    # The one host sync of the epoch: the figures are printed.
    check_finite(first_bad_step, parameters, epoch, num_steps, num_steps)
    return (correct.item() / num_samples, loss_sum.item() / num_samples,
            features.cpu(), labels_seen.cpu())


@torch.no_grad()
def test(model, center_loss, nll_loss, loss_weight, test_loader):
    """Accuracy and mean per-sample loss (the training objective) on the test split."""
    model.eval()
    device = test_loader.labels.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    for images, labels in test_loader:
        feat, log_probs = model(images)
        loss = nll_loss(log_probs, labels) + loss_weight * center_loss(labels, feat)
        loss_sum += loss * labels.size(0)
        correct += (log_probs.argmax(1) == labels).sum()
    num_samples = test_loader.num_samples
    # Host sync: the figures are printed.
    return correct.item() / num_samples, loss_sum.item() / num_samples


def draw_features(ax, feat, labels, centers=None):
    """Scatter 2-D features on `ax`, coloured by digit, with the centres and a legend.

    The axes are fitted to the data (never clipping a point); equal scales keep the
    angles between classes, which the bias-free classifier separates them by, true.
    """
    feat = torch.as_tensor(feat).cpu().numpy()
    labels = torch.as_tensor(labels).cpu().numpy()
    legend = []
    for digit, color in enumerate(DIGIT_COLORS):
        points = feat[labels == digit]
        ax.plot(points[:, 0], points[:, 1], ".", color=color, markersize=2)
        legend.append(Line2D([], [], linestyle="", marker="o", color=color, label=str(digit)))
    if centers is not None:
        centers = torch.as_tensor(centers).detach().cpu().numpy()
        ax.plot(centers[:, 0], centers[:, 1], "X", color="black", markeredgecolor="white", markersize=9)
        legend.append(Line2D([], [], linestyle="", marker="X", color="black", label="centres"))
    # The legend sits right of the axes, so it hides no point.
    ax.legend(handles=legend, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(True, linewidth=0.3)
    ax.set_xlabel("feature 1")
    ax.set_ylabel("feature 2")


def visualize(feat, labels, epoch, path, centers=None):
    """Write the feature plot of one epoch to a PNG at `path`."""
    fig = Figure(figsize=(8, 7), dpi=100)
    fig.subplots_adjust(left=0.1, right=0.84)
    ax = fig.add_subplot()
    draw_features(ax, feat, labels, centers)
    ax.set_title(f"epoch = {epoch}")
    # A Figure made without pyplot is freed with its last reference: nothing stays open.
    image = io.BytesIO()
    fig.savefig(image, format=Path(path).suffix.lstrip(".") or "png")
    atomic_write(path, image.getvalue())


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

    def __init__(self):
        self.signum = None

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
        return self.signum is not None

    def exit(self, message):
        """Print `message` and end with the status a shell gives that signal (128 + its number)."""
        print(message, file=sys.stderr, flush=True)
        sys.exit(128 + self.signum)


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


def main(argv=None):
    args = parse_args(argv)
    state = None
    if args.resume:
        resume_path, state = read_resume_state(args)
        args = resume_args(argv, args, state["args"])
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    try:
        train_loader, test_loader, classes = load_dataset(
            args.dataset_dir, args.batch_size, args.batch_size, img_show=args.img_show,
            device=device, seed=args.seed,
            max_train_samples=args.max_train_samples, max_test_samples=args.max_test_samples)
    except (DatasetError, WriteError) as error:
        fail(str(error))

    model = Net(num_classes=len(classes)).to(device)
    center_loss = CenterLoss(len(classes), 2).to(device)
    nll_loss = nn.NLLLoss()
    optimizer_net = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                    weight_decay=args.weight_decay)
    optimizer_center = torch.optim.SGD(center_loss.parameters(), lr=args.center_lr)
    scheduler = lr_scheduler.StepLR(optimizer_net, step_size=args.step_size, gamma=args.gamma)
    modules = {"model": model, "center_loss": center_loss}
    optimizers = {"net": optimizer_net, "center": optimizer_center}
    state_path = training_state_path(args.model_path_temp)
    # The newest training state known to be good: the one to go back to.
    last_good = None
    history, first_epoch, progress = [], 1, None
    if state is not None:
        history, first_epoch, progress = restore_training_state(
            state, modules, optimizers, scheduler, train_loader, args)
        last_good = resume_path
        where = f"epoch {first_epoch}" + (f" after step {progress['step']}" if progress else "")
        print(f"Resuming from {resume_path} at {where}")
        if first_epoch > args.epochs:
            print(f"Nothing to train: the run has finished epoch {first_epoch - 1} and --epochs is {args.epochs}; "
                  f"give a larger --epochs to train on")
            return

    with StopSignals() as stop:
        try:
            print(f"Training on {device}: {train_loader.num_samples} training and "
                  f"{test_loader.num_samples} test images, {args.epochs} epochs", flush=True)
            for epoch in range(first_epoch, args.epochs + 1):
                rng_at_epoch_start = rng_states(train_loader.generator)
                try:
                    train_acc, train_loss, features, labels = train(
                        model, center_loss, nll_loss, args.loss_weight, (optimizer_net, optimizer_center),
                        train_loader, epoch, progress, stop.requested)
                except TrainingInterrupted as interrupted:
                    save_training_state(state_path, epoch - 1, modules, optimizers, scheduler, rng_at_epoch_start,
                                        vars(args), history, interrupted.progress)
                    stop.exit(f"Stopped in epoch {epoch} after step {interrupted.progress['step']} of "
                              f"{len(train_loader)}. {resume_hint(state_path)}")
                except NonFiniteError as error:
                    fail(non_finite_message(error, args, last_good))
                progress = None
                # After the epoch's optimizer steps, as PyTorch >= 1.1 requires.
                scheduler.step()
                test_acc, test_loss = test(model, center_loss, nll_loss, args.loss_weight, test_loader)
                print(f"Epoch: {epoch:>3}, train acc: {train_acc:.4f}, train loss: {train_loss:.4f}, "
                      f"test acc: {test_acc:.4f}, test loss: {test_loss:.4f}", flush=True)
                history.append({"epoch": epoch, "train_acc": train_acc, "train_loss": train_loss,
                                "test_acc": test_acc, "test_loss": test_loss})
                save_checkpoint(epoch_path(args.model_path_temp, epoch), model.state_dict())
                visualize(features, labels, epoch, epoch_path(args.vis_img_path_temp, epoch), center_loss.centers)
                # Written last: a run killed before this line redoes the epoch and its files.
                save_training_state(state_path, epoch, modules, optimizers, scheduler,
                                    rng_states(train_loader.generator), vars(args), history)
                last_good = state_path
                if stop.requested() and epoch < args.epochs:
                    stop.exit(f"Stopped after epoch {epoch}. {resume_hint(state_path)}")
        except KeyboardInterrupt:
            stop.exit("Stopped at once by a second signal; " + (
                f"the last training state saved is {last_good}" if last_good else "no training state was saved"))
        except WriteError as error:
            fail(str(error))


if __name__ == "__main__":
    main()
