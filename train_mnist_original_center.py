"""Train LeNets++ on MNIST with softmax + Center Loss, as in the article "MNISTでMetric Learning".

After every epoch: one line of train/test accuracy and loss, a checkpoint (the
model's state_dict) and a PNG scatter plot of the 2-D training features.
"""
import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.optim.lr_scheduler as lr_scheduler
from matplotlib.figure import Figure
from tqdm import tqdm

from center_loss import CenterLoss
from mnist_loader import MNIST_MEAN, MNIST_STD, REPO_DIR, DatasetError, load_dataset
from metrics import split_retrieval_metrics
from mnist_net import Net
from plots import draw_features, plot_curves, write_feature_gif

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


def digit_to_class(classes, device):
    """Lookup tensor: digit -> index of its class in the model's outputs, -1 if held out."""
    lookup = torch.full((10,), -1, dtype=torch.long)
    lookup[[int(name) for name in classes]] = torch.arange(len(classes))
    return lookup.to(device)


def train(model, center_loss, nll_loss, loss_weight, optimizers, train_loader, class_of_digit, epoch):
    """One epoch. Returns the figures {acc, loss, center_loss} (means per image) and the
    features and digits of every training image in the order seen, on the host."""
    model.train()
    device = train_loader.labels.device
    num_samples = train_loader.num_samples
    features = torch.empty(num_samples, center_loss.feat_dim, device=device)
    digits_seen = torch.empty(num_samples, dtype=torch.long, device=device)
    sums = torch.zeros(3, device=device)  # correct, loss, centre-loss part
    start = 0
    for images, digits in tqdm(train_loader, desc=f"Epoch {epoch:>3}", leave=False, disable=None):
        targets = class_of_digit[digits]
        feat, log_probs = model(images)
        center = center_loss(targets, feat)
        loss = nll_loss(log_probs, targets) + loss_weight * center
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        # Sums stay on the device: no host sync until the epoch's line is printed.
        end = start + digits.size(0)
        features[start:end] = feat.detach()
        digits_seen[start:end] = digits
        sums += torch.stack([(log_probs.argmax(1) == targets).sum().float(),
                             loss.detach() * digits.size(0), center.detach() * digits.size(0)])
        start = end
    # The one host sync of the epoch: the figures are printed.
    correct, loss_sum, center_sum = (sums / num_samples).tolist()
    figures = {"acc": correct, "loss": loss_sum, "center_loss": center_sum}
    return figures, features.cpu(), digits_seen.cpu()


@torch.no_grad()
def embed(model, loader):
    """Features, log-probabilities and labels of every image `loader` gives, in order, on
    its device."""
    model.eval()
    device = loader.labels.device
    features = torch.empty(loader.num_samples, model.ip1.out_features, device=device)
    log_probs = torch.empty(loader.num_samples, model.ip2.out_features, device=device)
    labels = torch.empty(loader.num_samples, dtype=torch.long, device=device)
    start = 0
    for images, batch_labels in loader:
        end = start + images.size(0)
        features[start:end], log_probs[start:end] = model(images)
        labels[start:end] = batch_labels
        start = end
    return features, log_probs, labels


@torch.no_grad()
def test(model, center_loss, nll_loss, loss_weight, test_loader, class_of_digit):
    """Figures {acc, loss, center_loss} on the test images of the trained digits (means per
    image of the training objective), and the features of all test images, on the device."""
    features, log_probs, digits = embed(model, test_loader)
    targets = class_of_digit[digits]
    seen = targets >= 0  # held-out digits have no class to be scored against
    center = center_loss(targets[seen], features[seen])
    loss = nll_loss(log_probs[seen], targets[seen]) + loss_weight * center
    correct = (log_probs[seen].argmax(1) == targets[seen]).float().mean()
    # Host sync: the figures are printed.
    acc, loss, center = torch.stack([correct, loss, center]).tolist()
    return {"acc": acc, "loss": loss, "center_loss": center}, features


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
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # A Figure made without pyplot is freed with its last reference: nothing stays open.
    fig.savefig(path)


def epoch_line(epoch, train_figures, test_figures, retrieval):
    line = (f"Epoch: {epoch:>3}, train acc: {train_figures['acc']:.4f}, train loss: {train_figures['loss']:.4f}, "
            f"test acc: {test_figures['acc']:.4f}, test loss: {test_figures['loss']:.4f}, "
            f"test MAP@R: {retrieval['map_at_r']:.4f}")
    if "unseen_map_at_r" in retrieval:
        line += f", unseen MAP@R: {retrieval['unseen_map_at_r']:.4f}"
    return line


def write_history(history, path):
    """The per-epoch figures as CSV, and the curves plot beside it (same name, .png)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    plot_curves(history, path.with_suffix(".png"))


def open_tensorboard(log_dir):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        fail("--tensorboard needs the tensorboard package, which is not installed: pip install tensorboard")
    return SummaryWriter(log_dir)


def main(argv=None):
    args = parse_args(argv)
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    try:
        train_loader, test_loader, classes = load_dataset(
            args.dataset_dir, args.batch_size, args.batch_size, img_show=args.img_show,
            device=device, seed=args.seed, max_train_samples=args.max_train_samples,
            max_test_samples=args.max_test_samples, holdout_classes=args.holdout_classes)
    except DatasetError as error:
        fail(str(error))
    tensorboard = open_tensorboard(args.tensorboard) if args.tensorboard else None

    model = Net(num_classes=len(classes)).to(device)
    center_loss = CenterLoss(len(classes), 2).to(device)
    nll_loss = nn.NLLLoss()
    optimizer_net = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                    weight_decay=args.weight_decay)
    optimizer_center = torch.optim.SGD(center_loss.parameters(), lr=args.center_lr)
    scheduler = lr_scheduler.StepLR(optimizer_net, step_size=args.step_size, gamma=args.gamma)
    class_of_digit = digit_to_class(classes, device)
    class_digits = [int(name) for name in classes]
    unseen_digits = sorted(args.holdout_classes)
    test_digits = test_loader.labels.cpu()
    visual_dir = Path(epoch_path(args.vis_img_path_temp, 1)).parent
    history, test_features_per_epoch = [], []

    print(f"Training on {device}: {train_loader.num_samples} training and "
          f"{test_loader.num_samples} test images, {args.epochs} epochs"
          + (f", digits {unseen_digits} held out" if unseen_digits else ""))
    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        lr = optimizer_net.param_groups[0]["lr"]
        train_figures, features, digits = train(
            model, center_loss, nll_loss, args.loss_weight, (optimizer_net, optimizer_center),
            train_loader, class_of_digit, epoch)
        # After the epoch's optimizer steps, as PyTorch >= 1.1 requires.
        scheduler.step()
        test_figures, test_features = test(model, center_loss, nll_loss, args.loss_weight, test_loader,
                                           class_of_digit)
        retrieval = split_retrieval_metrics(test_features, test_loader.labels, unseen_digits)
        test_features = test_features.cpu()
        print(epoch_line(epoch, train_figures, test_figures, retrieval), flush=True)

        row = {"epoch": epoch, "lr": lr, "center_lr": optimizer_center.param_groups[0]["lr"]}
        row.update({f"train_{name}": value for name, value in train_figures.items()})
        row.update({f"test_{name}": value for name, value in test_figures.items()})
        row.update(retrieval)
        row["seconds"] = time.perf_counter() - started
        history.append(row)
        test_features_per_epoch.append(test_features)

        torch.save(model.state_dict(), epoch_path(args.model_path_temp, epoch))
        visualize(features, digits, epoch, epoch_path(args.vis_img_path_temp, epoch), center_loss.centers,
                  test_features, test_digits, class_digits, unseen_digits)
        write_history(history, args.history_path)
        torch.save({"features": torch.stack(test_features_per_epoch), "digits": test_digits,
                    "epochs": [row["epoch"] for row in history], "unseen_digits": unseen_digits},
                   visual_dir / "test_features.pt")
        if tensorboard:
            for name, value in row.items():
                if name != "epoch":
                    tensorboard.add_scalar(name, value, epoch)

    frames = write_feature_gif(torch.stack(test_features_per_epoch), test_digits, visual_dir / "features.gif",
                               unseen_digits, [row["epoch"] for row in history])
    print(f"Wrote {frames} frames of test features to {visual_dir / 'features.gif'}")
    if tensorboard:
        thumbnails = test_loader.images.cpu() * MNIST_STD + MNIST_MEAN
        tensorboard.add_embedding(test_features, metadata=test_digits.tolist(), label_img=thumbnails,
                                  global_step=args.epochs, tag="test_features")
        tensorboard.close()


if __name__ == "__main__":
    main()
