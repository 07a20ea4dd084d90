"""The first training steps of each head on real MNIST: feature norm, gradient norm and
accuracy, the figures behind margin_heads.NORM_FLOOR (see docs/margin-heads.md).

    python3 benchmarks/head_first_steps.py --dataset_dir ../shared/mnist --images 25600

Each head trains from the same initial weights with the article's settings (and its
Center Loss, weighted by `--loss_weight`), `--images` images in batches of 128, bfloat16
autocast where the CPU has it. `--no_norm_floor` trains the angular heads with x / |x|
itself, as the papers write them; `--margin` replaces the heads' default margins. The
smallest angle between two class weights shows classes that share one direction.
"""
import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from center_loss import CenterLoss  # noqa: E402
from margin_heads import DEFAULT_MARGIN, HEADS, NORM_FLOOR, Head, check_head_settings  # noqa: E402
from mnist_loader import label_to_class  # noqa: E402
from mnist_net import Net  # noqa: E402

from run_machinery import cli  # noqa: E402  (after the path is set)
from run_machinery.datasets import load_dataset  # noqa: E402
from run_machinery.devices import bf16_supported  # noqa: E402


def first_steps(head_name, train_loader, class_of_label, amp, norm_floor=NORM_FLOOR, seed=1,
                margin=None, loss_weight=1.0):
    """Per step: mean feature norm, the network's gradient norm, batch accuracy; the last loss
    and the smallest angle between two class weights at the end, in degrees."""
    torch.manual_seed(seed)
    model, center_loss = Net(), CenterLoss(10, 2)
    head = Head(head_name, model.ip2.weight, margin=margin)
    head.norm_floor = norm_floor
    net_optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
    center_optimizer = torch.optim.SGD(center_loss.parameters(), lr=0.5)
    steps = []
    for step, (images, labels) in enumerate(train_loader, start=1):
        targets = class_of_label[labels]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            features, log_probs = model(images)
            loss = F.nll_loss(head(features, log_probs, targets, step), targets)
            loss = loss + loss_weight * center_loss(targets, features)
        net_optimizer.zero_grad()
        center_optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
        net_optimizer.step()
        center_optimizer.step()
        steps.append((features.float().norm(dim=1).mean().item(), grad_norm.item(),
                      (head.predict(features, log_probs) == targets).float().mean().item()))
    directions = F.normalize(model.ip2.weight.detach(), dim=1)
    angles = torch.rad2deg(torch.acos((directions @ directions.T).clamp(-1, 1)))
    return steps, loss.item(), angles[~torch.eye(len(angles), dtype=torch.bool)].min().item()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_dir", required=True, help="MNIST folder, as for the trainer")
    parser.add_argument("--images", type=int, default=12800,
                        help="training images (steps = images / 128)")
    parser.add_argument("--heads", nargs="+", choices=HEADS, default=list(HEADS))
    parser.add_argument("--no_norm_floor", action="store_true",
                        help="x / |x| for every norm (the papers' heads)")
    parser.add_argument("--margin", type=float, default=None,
                        help="m for every head listed that takes one; default: each head's")
    parser.add_argument("--loss_weight", type=float, default=1.0,
                        help="weight of the Center Loss (0: the head alone)")
    args = parser.parse_args(argv)
    with cli.one_line_errors():  # a --margin that some head listed cannot take, before any training
        margins = {name: check_head_settings(name, None,
                                             args.margin if name in DEFAULT_MARGIN else None)[1]
                   for name in args.heads}
    norm_floor = 1e-12 if args.no_norm_floor else NORM_FLOOR
    train_loader, _, classes = load_dataset(args.dataset_dir, 128, 128, seed=1,
                                            max_train_samples=args.images, max_test_samples=128)
    class_of_label = label_to_class(classes, torch.device("cpu"))
    amp = bf16_supported(torch.device("cpu"))
    print(f"{len(train_loader)} steps of 128 images, {'bfloat16 autocast' if amp else 'float32'}, "
          f"norm floor {norm_floor:g}, Center Loss weight {args.loss_weight:g}")
    for name in args.heads:
        margin = margins[name]
        steps, last_loss, closest = first_steps(name, train_loader, class_of_label, amp, norm_floor,
                                                margin=margin, loss_weight=args.loss_weight)
        norms, grads, accuracies = zip(*steps)
        print(f"{name:<10} feature norm: first {norms[0]:.3g}, max {max(norms):.3g}, "
              f"last {norms[-1]:.3g}; "
              f"gradient norm: first {grads[0]:.3g}, max {max(grads):.3g}, last {grads[-1]:.3g}; "
              f"accuracy of the last 10 steps {sum(accuracies[-10:]) / 10:.3f}; "
              f"last loss {last_loss:.3f}; "
              f"closest class weights {closest:.1f} deg"
              + (f" (m = {margin:g})" if margin is not None else ""))


if __name__ == "__main__":
    main()
