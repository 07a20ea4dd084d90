"""Train LeNets++ on MNIST with softmax + Center Loss, as in the article "MNISTでMetric Learning".

The article's five steps, in its order: data, model, loss, optimizer, train and test.
After every epoch: one line of metrics, the model's checkpoint, a PNG of the 2-D
features, the history and the training state, all in one folder (--out_dir) beside the
run's settings file, run.json. The run machinery (resume, signals, NaN watch, files,
torchrun) lives in the modules named for it.
"""
import itertools
import shlex
from pathlib import Path

from run_machinery import cli
from run_machinery.training_flags import add_training_flags

# The article's three flags; run_machinery/training_flags.py declares the project's around them.
ARTICLE_FLAGS = {
    "--dataset_dir": dict(
        default=str(cli.DEFAULT_DATASET_DIR),
        help="folder with the dataset (downloaded there when missing): torchvision's layout "
             "(MNIST/raw/, FashionMNIST/raw/, KMNIST/raw/) or the four IDX files directly, plain "
             "or .gz; for --dataset folder, DIR with DIR/train/CLASS/* and DIR/test/CLASS/* "
             "(ImageFolder's layout), where the decoded images are cached (decoded_*.pt); IDX "
             "files with known checksums must be the named dataset's"),
    "--model_path_temp": dict(
        default=None, help="per-epoch checkpoint path, {} becoming the zero-padded epoch; "
                           "default: OUT_DIR/model/epoch_{}.pth"),
    "--vis_img_path_temp": dict(
        default=None, help="per-epoch feature plot path, {} becoming the zero-padded epoch; "
                           "default: OUT_DIR/visual/epoch_{}.png"),
}


def build_parser():
    parser = cli.command_parser(
        "Train LeNets++ on MNIST with softmax + Center Loss (Wen et al., ECCV 2016).")
    add_training_flags(parser, ARTICLE_FLAGS)
    return parser


if __name__ == "__main__":  # --help, a mistyped flag and Ctrl-C answered before the slow imports
    cli.parse_before_imports(build_parser(), "training began")

import torch
import torch.nn as nn
import torch.optim as optim
import torch.optim.lr_scheduler as lr_scheduler
from tqdm import tqdm

from center_loss import CenterLoss
from margin_heads import Head
from mnist_net import Net

from run_machinery import distributed
from run_machinery.checkpointing import save_figure
from run_machinery.datasets import load_dataset
from run_machinery.devices import pick_device, speed_setup
from run_machinery.embedding import embed
from run_machinery.history import EpochClock, EpochProgress, EpochRecord, LossMetrics
from run_machinery.metrics import split_retrieval_metrics
from run_machinery.nan_watch import NanWatch, check_test_pass
from run_machinery.plots import epoch_figure
from run_machinery.run_output import RunOutput
from run_machinery.save_and_resume import StateKeeper, resumed_run_settings
from run_machinery.settings import check_settings, run_settings
from run_machinery.stop_signals import TrainingInterrupted, run_ending
from run_machinery.training_extras import TrainingExtras
from run_machinery.training_state import seed_all


def parse_args(argv=None):
    """The settings; a resumed run's are those it was started with, but for the flags given."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume:
        args = resumed_run_settings(parser, argv, args)
    check_settings(args)
    return run_settings(args)


def train(model, train_loader, nll_loss, center_loss, dnn_optimizer, center_optimizer, epoch,
          extras, progress=None):
    """One epoch, as in the article, with the project's `extras` (a TrainingExtras: head,
    loss weights, triplet term, autocast, stop request). Returns its LossMetrics and the
    features and labels of every training image in the order seen (under torchrun: of every
    rank), on the host.

    Raises NonFiniteError when a loss, a feature or a weight became NaN or infinite, and
    TrainingInterrupted after a step (not the last) at which a stop was asked for; the epoch
    goes on exactly when that `progress` is given back with the loader's generator as it
    was at the epoch's start.
    """
    head, triplet, stop = extras.head, extras.triplet, extras.stop
    model.train()
    num_steps, device = len(train_loader), train_loader.labels.device
    progress = progress or EpochProgress.start(train_loader.num_samples, center_loss.feat_dim,
                                               device)
    watch = NanWatch(device)
    start = progress.step * train_loader.batch_size
    # the steps done before a stop are skipped
    batches = itertools.islice(train_loader, progress.step, None)
    batches = tqdm(batches, desc=f"Epoch {epoch:>3}", total=num_steps, initial=progress.step,
                   leave=False, disable=None)
    for step, (images, labels) in enumerate(batches, start=progress.step + 1):
        # each label's class among the model's outputs
        targets = train_loader.class_of_label[labels]
        # Predict labels and calculate the loss, the two parts weighted.
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=extras.amp):
            ip1, pred = model(images)
            # The article's log-softmax, or an angular head's with its margin at the true class.
            softmax_loss = nll_loss(head(ip1, pred, targets, (epoch - 1) * num_steps + step),
                                    targets)
            center = center_loss(targets, ip1,
                                 distributed.batch_class_counts(targets, center_loss.num_classes))
            loss = extras.softmax_weight * softmax_loss + extras.loss_weight * center
            # The re-ID baseline's third part: batch-hard triplets in the PK batch.
            triplet_loss = triplet(ip1, targets, head.angular) if triplet else None
            if triplet:
                loss = loss + triplet.weight * triplet_loss
        # Initialise the gradients, calculate them, update the parameters.
        dnn_optimizer.zero_grad(set_to_none=True)
        center_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(center_loss.parameters())  # the centres live outside DDP
        dnn_optimizer.step()
        center_optimizer.step()
        # For the metrics and the picture, kept on the device: no host sync per step.
        watch.step(step, ip1, softmax_loss, center)
        correct = (head.predict(ip1, pred) == targets).sum()
        start = progress.add(step, start, ip1, labels, correct, loss, center, triplet_loss)
        if stop is not None and stop.requested() and step < num_steps:
            watch.check(model.parameters(), center_loss.centers, epoch, step, num_steps)
            raise TrainingInterrupted(progress)
    # The one host sync of the epoch: the metrics are printed.
    watch.check(model.parameters(), center_loss.centers, epoch, num_steps, num_steps)
    sums = [progress.correct, progress.loss_sum, progress.center_loss_sum]
    sums = torch.stack(sums + [progress.triplet_loss_sum] if triplet else sums)
    sums = distributed.sum_across_ranks(sums) / (train_loader.num_samples * train_loader.world_size)
    features, labels = (distributed.gather_rows(progress.features),
                        distributed.gather_rows(progress.labels))
    return LossMetrics(*sums.tolist()), features.cpu(), labels.cpu()


@torch.no_grad()
def test(model, test_loader, nll_loss, center_loss, extras):
    """LossMetrics on the test images of the trained classes (means per image of the
    training objective, as at the last training step, with the `extras` of train()), and
    the features and labels of all test images, on the device (under torchrun: of all
    ranks' parts together)."""
    head = extras.head
    features, log_probs, labels = embed(model, test_loader, extras.amp)
    targets = test_loader.class_of_label[labels]
    seen = targets >= 0  # held-out classes have no output to be scored against
    count = seen.sum()
    seen_features, seen_log_probs, targets = features[seen], log_probs[seen], targets[seen]
    center = center_loss(targets, seen_features) if count else features.new_zeros(())
    head_log_probs = head(seen_features, seen_log_probs, targets)
    softmax_loss = extras.softmax_weight * nll_loss(head_log_probs, targets)
    loss = (softmax_loss + extras.loss_weight * center) if count else center
    correct = (head.predict(seen_features, seen_log_probs) == targets).sum()
    sums = torch.stack([correct.float(), loss * count, center * count, count.float()])
    # Host sync: the metrics are printed.
    correct, loss, center, count = distributed.sum_across_ranks(sums).tolist()
    count = max(count, 1)
    metrics = LossMetrics(correct / count, loss / count, center / count)
    features, labels = distributed.gather_rows(features), distributed.gather_rows(labels)
    check_test_pass(features, metrics.loss)  # a bad epoch is never saved
    return metrics, features, labels


def visualize(feat, labels, epoch, path, centers=None, test_feat=None, test_labels=None,
              holdout_classes=(), class_directions=None, class_names=None):
    """Write the feature plot of one epoch to `path`: the training features with the
    centres, beside them the test features when given, and for an angular head their
    directions with each class weight's (`class_directions`: class -> weight)."""
    figure = epoch_figure(epoch, feat, labels, centers, test_feat, test_labels, holdout_classes,
                          class_directions, class_names)
    save_figure(figure, path)


def resume_command():
    """How to run this script again from the current folder."""
    script = Path(__file__).resolve()
    shown = script.relative_to(Path.cwd()) if script.is_relative_to(Path.cwd()) else script
    return f"python3 {shlex.quote(str(shown))}"


def main(argv=None):
    """Train and test as the article does; returns the run's History (an EpochRecord an epoch)."""
    with run_ending() as run:  # a stop or an error ends in one line
        # Arguments
        args = parse_args(argv)
        files = run.enter_context(RunOutput(args))  # the run's folder, checked before training
        seed_all(args.seed)  # every rank: the same initial weights, centres and shuffling

        # Dataset, each split one tensor on the device
        rank, world_size = distributed.rank_and_world_size()
        train_loader, test_loader, classes = load_dataset(
            args.dataset_dir, args.batch_size, args.batch_size, seed=args.seed, rank=rank,
            world_size=world_size, dataset=args.dataset, holdout_classes=args.holdout_classes,
            max_train_samples=args.max_train_samples, max_test_samples=args.max_test_samples,
            classes_per_batch=args.classes_per_batch, images_per_class=args.images_per_class)
        device = distributed.setup(pick_device(args.device))
        train_loader, test_loader = train_loader.to(device), test_loader.to(device)

        # Model
        model = Net(num_classes=len(classes), feat_dim=args.feat_dim).to(device)
        step_model = speed_setup(model, device, args.channels_last, args.compile)  # DDP, compile

        # Loss
        nll_loss = nn.NLLLoss()  # on log_softmax: NLLLoss is the cross-entropy
        head = Head(args.head, model.ip2.weight, args.scale, args.margin)  # softmax: ip2 as it is
        center_loss = CenterLoss(len(classes), args.feat_dim).to(device)
        extras = TrainingExtras.from_settings(args, head, run.stop)  # weights, triplet, autocast

        # Optimizer
        dnn_optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                  weight_decay=args.weight_decay)
        center_optimizer = optim.SGD(center_loss.parameters(), lr=args.center_lr)
        scheduler = lr_scheduler.StepLR(dnn_optimizer, step_size=args.step_size, gamma=args.gamma)
        keeper = StateKeeper(  # the training state: new, or the one --resume names
            args, files.paths.training_state, files.writes, run.stop, model, center_loss,
            dnn_optimizer, center_optimizer, scheduler, resume_command(),
            build_parser().parse_args([]))
        history, first_epoch = keeper.start(train_loader)
        files.start(classes, device, train_loader, test_loader, first_epoch)
        for epoch in range(first_epoch, args.epochs + 1):
            # Train and test a model.
            clock, lr = EpochClock(), dnn_optimizer.param_groups[0]["lr"]
            # a stop: the state saved; a NaN: advice
            with keeper.guarding_epoch(epoch, history) as progress:
                train_metrics, feat, labels = train(step_model, train_loader, nll_loss, center_loss,
                                                    dnn_optimizer, center_optimizer, epoch, extras,
                                                    progress)
                scheduler.step()  # after the epoch's optimizer steps, as PyTorch requires
                clock.lap("train")
                test_metrics, test_feat, test_labels = test(step_model, test_loader, nll_loss,
                                                            center_loss, extras)
                clock.lap("test")
            retrieval = split_retrieval_metrics(head.retrieval_features(test_feat), test_labels,
                                                args.holdout_classes)
            clock.lap("metrics")
            record = EpochRecord(epoch, lr, center_optimizer.param_groups[0]["lr"], train_metrics,
                                 test_metrics, retrieval, clock.seconds(), clock.times)
            history.add(record, test_feat, test_labels)
            print(record.line())
            # Visualize features of each class; save the model and the training state.
            files.plot(visualize, feat, labels, epoch, files.paths.visual(epoch),
                       centers=center_loss.centers.detach().cpu(), test_feat=test_feat,
                       test_labels=test_labels, class_directions=head.class_directions(classes),
                       holdout_classes=args.holdout_classes, class_names=train_loader.class_names)
            files.write_epoch(record, model, history)
            keeper.save(epoch, history)
            clock.lap("files")
            keeper.stop_if_asked(epoch)
        files.finish(history, test_loader)
        return history


if __name__ == "__main__":
    main()
