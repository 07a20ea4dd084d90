"""Train LeNets++ on MNIST with softmax + Center Loss, as in the article "MNISTでMetric Learning".

After every epoch: one line of train/test accuracy and loss, a checkpoint (the
model's state_dict) and a PNG scatter plot of the 2-D training features.
"""
import argparse
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn as nn
import torch.optim.lr_scheduler as lr_scheduler
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from tqdm import tqdm

from center_loss import CenterLoss
from mnist_loader import REPO_DIR, DatasetError, load_dataset
from mnist_net import Net

# The article's ten colours, one per digit 0-9.
DIGIT_COLORS = ("#ff0000", "#ffff00", "#00ff00", "#00ffff", "#0000ff",
                "#ff00ff", "#990000", "#999900", "#009900", "#009999")


def parse_args(argv=None):
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
    parser.add_argument("--amp", action="store_true",
                        help="bfloat16 autocast for the forward pass and the loss, on CUDA or on a CPU "
                             "with native bf16 (AVX512-BF16 or AMX); off: float32 throughout")
    parser.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=True,
                        help="keep the network's weights and activations in channels-last memory format, "
                             "in which the CPU's convolutions and pooling run faster")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the network; the first epoch then includes the compile time")
    parser.add_argument("--img_show", action="store_true",
                        help="save a grid of one training batch (outputs/visual/train_batch.png) "
                             "and show it when a display exists")
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
    if args.amp and not bf16_supported(pick_device(args.device)):
        fail(f"--amp needs native bfloat16, which this {pick_device(args.device).type.upper()} lacks "
             "(on a CPU: AVX512-BF16 or AMX); train in float32 without --amp")
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


def bf16_supported(device):
    """Whether bfloat16 runs natively (fast) on `device`; emulated bf16 would be slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def speed_setup(model, device, channels_last=False, compiled=False):
    """Apply the speed settings to `model` (in place) and the backends; return the module
    to call in the step loop: the compiled one, or `model` itself. Checkpoints are taken
    from `model`, whose state_dict keys stay the article's."""
    if device.type == "cuda":
        # Inputs have a fixed shape, so cuDNN's autotuning pays off after the first batch.
        torch.backends.cudnn.benchmark = True
        # TF32 for the float32 matrix multiplies (cuDNN's convolutions use it by default).
        torch.backends.cuda.matmul.fp32_precision = "tf32"
    if channels_last:
        # Only the weights: a 1-channel image has the same layout in both formats, and the
        # convolutions follow the weights' format from the first layer on.
        model.to(memory_format=torch.channels_last)
    return torch.compile(model) if compiled else model


def train(model, center_loss, nll_loss, loss_weight, optimizers, train_loader, epoch, amp=False):
    """One epoch. Returns (accuracy, mean loss, features, labels) with the features
    and labels of every training image, in the order they were seen, on the host.
    With `amp`, the forward pass and the loss run under bfloat16 autocast."""
    model.train()
    device = train_loader.labels.device
    num_samples = train_loader.num_samples
    features = torch.empty(num_samples, center_loss.feat_dim, device=device)
    labels_seen = torch.empty(num_samples, dtype=torch.long, device=device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    start = 0
    for images, labels in tqdm(train_loader, desc=f"Epoch {epoch:>3}", leave=False, disable=None):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            feat, log_probs = model(images)
            loss = nll_loss(log_probs, labels) + loss_weight * center_loss(labels, feat)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        # Sums stay on the device: no host sync until the epoch's line is printed.
        end = start + labels.size(0)
        features[start:end] = feat.detach()
        labels_seen[start:end] = labels
        loss_sum += loss.detach() * labels.size(0)
        correct += (log_probs.argmax(1) == labels).sum()
        start = end
    # The one host sync of the epoch: the figures are printed.
    return (correct.item() / num_samples, loss_sum.item() / num_samples,
            features.cpu(), labels_seen.cpu())


@torch.no_grad()
def test(model, center_loss, nll_loss, loss_weight, test_loader, amp=False):
    """Accuracy and mean per-sample loss (the training objective) on the test split."""
    model.eval()
    device = test_loader.labels.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    for images, labels in test_loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
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
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # A Figure made without pyplot is freed with its last reference: nothing stays open.
    fig.savefig(path)


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


def main(argv=None):
    args = parse_args(argv)
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    try:
        train_loader, test_loader, classes = load_dataset(
            args.dataset_dir, args.batch_size, args.batch_size, img_show=args.img_show,
            device=device, seed=args.seed,
            max_train_samples=args.max_train_samples, max_test_samples=args.max_test_samples)
    except DatasetError as error:
        fail(str(error))

    model = Net(num_classes=len(classes)).to(device)
    step_model = speed_setup(model, device, channels_last=args.channels_last, compiled=args.compile)
    center_loss = CenterLoss(len(classes), 2).to(device)
    nll_loss = nn.NLLLoss()
    optimizer_net = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                    weight_decay=args.weight_decay)
    optimizer_center = torch.optim.SGD(center_loss.parameters(), lr=args.center_lr)
    scheduler = lr_scheduler.StepLR(optimizer_net, step_size=args.step_size, gamma=args.gamma)

    print(f"Training on {device}: {train_loader.num_samples} training and "
          f"{test_loader.num_samples} test images, {args.epochs} epochs")
    if args.compile:
        print("torch.compile: the first epoch includes compiling the network", flush=True)
    plotter = Plotter(background=device.type == "cuda")
    for epoch in range(1, args.epochs + 1):
        train_acc, train_loss, features, labels = train(
            step_model, center_loss, nll_loss, args.loss_weight, (optimizer_net, optimizer_center),
            train_loader, epoch, amp=args.amp)
        # After the epoch's optimizer steps, as PyTorch >= 1.1 requires.
        scheduler.step()
        test_acc, test_loss = test(step_model, center_loss, nll_loss, args.loss_weight, test_loader,
                                   amp=args.amp)
        print(f"Epoch: {epoch:>3}, train acc: {train_acc:.4f}, train loss: {train_loss:.4f}, "
              f"test acc: {test_acc:.4f}, test loss: {test_loss:.4f}", flush=True)
        torch.save(model.state_dict(), epoch_path(args.model_path_temp, epoch))
        plotter.submit(visualize, features, labels, epoch, epoch_path(args.vis_img_path_temp, epoch),
                       center_loss.centers.detach().cpu().clone())
    plotter.wait()


if __name__ == "__main__":
    main()
