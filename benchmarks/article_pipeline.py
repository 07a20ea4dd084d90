"""The article's training pipeline as it was published, kept only to be timed against this project.

Per image and per epoch, torchvision's MNIST decodes a PIL image that a DataLoader turns
into a tensor with ToTensor + Normalize; every prediction is taken out one by one with
`int(p.argmax())` into Python lists that sklearn's `classification_report` summarises
at the end of the epoch; a pyplot plot of the features and a checkpoint are written
every epoch; the test pass is written in the same style.
The network, the losses and the optimisers are the project's: the recipe is the same,
only the code around it is the article's.

The functions take a `timer` whose `part(name)` is a context manager adding the time
spent inside to `name` (see benchmark_speed.py), with the benchmark's parts: "train"
(the training steps with their data: the wait for each batch and its copy to the device),
"eval" (the test pass with its data), "metrics" (the per-image predictions taken out,
the losses read, sklearn's report) and "files" (checkpoint and feature plot).
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the benchmark runs headless
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.optim.lr_scheduler as lr_scheduler  # noqa: E402
from sklearn.metrics import classification_report, f1_score  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchvision import transforms  # noqa: E402
from torchvision.datasets import MNIST  # noqa: E402

from center_loss import CenterLoss  # noqa: E402
from mnist_net import Net  # noqa: E402

COLORS = ("#ff0000", "#ffff00", "#00ff00", "#00ffff", "#0000ff",
          "#ff00ff", "#990000", "#999900", "#009900", "#009999")


def torchvision_root(dataset_dir):
    """The folder that torchvision's MNIST(root) reads: the one holding MNIST/raw/."""
    folder = Path(dataset_dir)
    if folder.name == "raw" and folder.parent.name == "MNIST":
        return folder.parent.parent
    if (folder / "MNIST" / "raw").is_dir():
        return folder
    raise FileNotFoundError(f"{folder}: the article's pipeline needs MNIST/raw/ "
                            f"with the four plain IDX files")


def load_dataset(dataset_dir, batch_size, max_train_samples=None, max_test_samples=None):
    transform = transforms.Compose([transforms.ToTensor(),
                                    transforms.Normalize((0.1307,), (0.3081,))])
    root = torchvision_root(dataset_dir)
    trainset = MNIST(root, train=True, download=False, transform=transform)
    testset = MNIST(root, train=False, download=False, transform=transform)
    # The benchmark's subset: the first N images, each still read through PIL as published.
    for dataset, limit in ((trainset, max_train_samples), (testset, max_test_samples)):
        dataset.data, dataset.targets = dataset.data[:limit], dataset.targets[:limit]
    train_loader = DataLoader(trainset, batch_size=batch_size, shuffle=True)
    test_loader = DataLoader(testset, batch_size=batch_size, shuffle=False)
    return train_loader, test_loader


def build(args, device):
    """Network, losses, optimisers and schedule from the trainer's settings, as the article
    builds them."""
    model = Net().to(device)
    center_loss = CenterLoss(10, 2).to(device)
    nll_loss = nn.NLLLoss()
    optimizer_net = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                    weight_decay=args.weight_decay)
    optimizer_center = torch.optim.SGD(center_loss.parameters(), lr=args.center_lr)
    scheduler = lr_scheduler.StepLR(optimizer_net, step_size=args.step_size, gamma=args.gamma)
    return model, center_loss, nll_loss, (optimizer_net, optimizer_center), scheduler


def timed_batches(loader, timer, part):
    """The batches of `loader`, the wait for each one timed as `part`."""
    batches = iter(loader)
    while True:
        with timer.part(part):
            batch = next(batches, None)
        if batch is None:
            return
        yield batch


def report(label_list, pred_list):
    """Accuracy and macro F1 from sklearn, as the article prints them each epoch."""
    scores = classification_report(label_list, pred_list, digits=4, output_dict=True,
                                   zero_division=0)
    return scores["accuracy"], f1_score(label_list, pred_list, average="macro", zero_division=0)


def train(model, center_loss, nll_loss, loss_weight, optimizers, train_loader, timer, device):
    """One epoch. Returns (accuracy, macro F1, mean loss, features, labels)."""
    model.train()
    ip1_loader, idx_loader = [], []
    pred_list, label_list = [], []
    train_loss = 0.0
    for images, labels in timed_batches(train_loader, timer, "train"):
        with timer.part("train"):
            images, labels = images.to(device), labels.to(device)
            ip1, log_probs = model(images)
            loss = nll_loss(log_probs, labels) + loss_weight * center_loss(labels, ip1)
            for optimizer in optimizers:
                optimizer.zero_grad()
            loss.backward()
            for optimizer in optimizers:
                optimizer.step()
        with timer.part("metrics"):
            train_loss += loss.item() * labels.size(0)
            for p, t in zip(log_probs, labels):
                pred_list.append(int(p.argmax()))
                label_list.append(int(t))
            ip1_loader.append(ip1)
            idx_loader.append(labels)
    with timer.part("metrics"):
        feat = torch.cat(ip1_loader, 0)
        labels = torch.cat(idx_loader, 0)
        accuracy, f1 = report(label_list, pred_list)
    return accuracy, f1, train_loss / len(label_list), feat, labels


def test(model, center_loss, nll_loss, loss_weight, test_loader, timer, device):
    """Returns (accuracy, macro F1, mean loss) on the test split."""
    model.eval()
    pred_list, label_list = [], []
    test_loss = 0.0
    with torch.no_grad():
        for images, labels in timed_batches(test_loader, timer, "eval"):
            with timer.part("eval"):
                images, labels = images.to(device), labels.to(device)
                ip1, log_probs = model(images)
                loss = nll_loss(log_probs, labels) + loss_weight * center_loss(labels, ip1)
            with timer.part("metrics"):
                test_loss += loss.item() * labels.size(0)
                for p, t in zip(log_probs, labels):
                    pred_list.append(int(p.argmax()))
                    label_list.append(int(t))
    with timer.part("metrics"):
        accuracy, f1 = report(label_list, pred_list)
    return accuracy, f1, test_loss / len(label_list)


def visualize(feat, labels, epoch, path):
    plt.figure(figsize=(8, 7))
    for i in range(10):
        plt.plot(feat[labels == i, 0], feat[labels == i, 1], ".", c=COLORS[i])
    plt.legend(["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"], loc="upper right")
    plt.title(f"epoch = {epoch}")
    plt.savefig(path)
    plt.close()


def run_epoch(model, center_loss, nll_loss, loss_weight, optimizers, scheduler, loaders, epoch,
              model_path, plot_path, timer, device):
    """One epoch of the article's main loop; returns its figures (train_acc, train_f1,
    train_loss, test_acc, test_f1, test_loss), as printed."""
    train_loader, test_loader = loaders
    train_acc, train_f1, train_loss, feat, labels = train(
        model, center_loss, nll_loss, loss_weight, optimizers, train_loader, timer, device)
    scheduler.step()
    test_acc, test_f1, test_loss = test(
        model, center_loss, nll_loss, loss_weight, test_loader, timer, device)
    print(f"Epoch: {epoch}, train acc: {train_acc:.4f}, train f1: {train_f1:.4f}, "
          f"train loss: {train_loss:.4f}, test acc: {test_acc:.4f}, test f1: {test_f1:.4f}, "
          f"test loss: {test_loss:.4f}", flush=True)
    with timer.part("files"):
        torch.save(model.state_dict(), model_path)
        visualize(feat.data.cpu().numpy(), labels.data.cpu().numpy(), epoch, plot_path)
    return {"train_acc": train_acc, "train_f1": train_f1, "train_loss": train_loss,
            "test_acc": test_acc, "test_f1": test_f1, "test_loss": test_loss}
