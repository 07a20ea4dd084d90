"""The checks a run's settings pass before anything is loaded, trained or written.

Each broken rule is a `UserError` with one line naming the flag, the rule and the value.
"""
import math
from pathlib import Path

from .devices import bf16_supported, pick_device
from .errors import UserError
from margin_heads import check_head_settings
from mnist_loader import parse_classes


def check_settings(args):
    """Raise UserError for a setting that cannot work, before anything is loaded or written."""
    for name in ("epochs", "batch_size", "step_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    for name in ("lr", "center_lr", "gamma"):
        if not 0 < getattr(args, name) < math.inf:
            raise UserError(f"--{name} must be positive and finite, got {getattr(args, name)}")
    for name in ("momentum", "weight_decay", "loss_weight"):
        if not 0 <= getattr(args, name) < math.inf:
            raise UserError(f"--{name} must be finite and not negative, got {getattr(args, name)}")
    if args.momentum >= 1:
        raise UserError(f"--momentum must be below 1 (SGD's velocity grows without bound at 1 or more), "
                        f"got {args.momentum}")
    if not 0 <= args.seed < 2 ** 32:  # the range every generator seeded from it takes (NumPy's is the narrowest)
        raise UserError(f"--seed must lie in 0 to 2**32 - 1, got {args.seed}")
    for name in ("max_train_samples", "max_test_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    holdout = parse_classes(args.dataset, args.holdout_classes)  # indices or names
    if len(set(holdout)) > 8:
        raise UserError(f"--holdout_classes takes distinct classes and leaves at least two to train on, "
                        f"got {args.holdout_classes}")
    args.holdout_classes = sorted(set(holdout))
    args.scale, args.margin = check_head_settings(args.head, args.scale, args.margin)  # the defaults recorded
    device = pick_device(args.device)  # one that the machine lacks stops here
    if args.amp and not bf16_supported(device):
        raise UserError(f"--amp needs native bfloat16, which this {device.type.upper()} lacks "
                        "(on a CPU: AVX512-BF16 or AMX); train in float32 without --amp")
    if args.dry_run:  # one step of training and one test batch
        args.max_train_samples = min(args.max_train_samples or args.batch_size, args.batch_size)
        args.max_test_samples = min(args.max_test_samples or args.batch_size, args.batch_size)
        args.epochs = 1
    # Absolute, so that run.json and --resume work from any folder.
    args.dataset_dir, args.out_dir = str(Path(args.dataset_dir).resolve()), str(Path(args.out_dir).resolve())
