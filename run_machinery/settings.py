"""The checks a run's settings pass before anything is loaded, trained or written, and
the settings as the run then records them.

Each broken rule is a `UserError` with one line naming the flag, the rule and the value.
"""
import argparse
import math
import re
from pathlib import Path

from margin_heads import check_head_settings
from mnist_loader import DATASETS

from .datasets import class_names
from .devices import bf16_supported, pick_device
from .errors import UserError
from .tensorboard_log import tensorboard_writer

# The widest feature a run may ask for: ip1 maps LeNets++'s 1,152 values to it, and a wider
# one is no embedding any more (and --feat_dim 1000000000 would try to allocate terabytes).
MAX_FEAT_DIM = 4096


def check_settings(args):
    """Raise UserError for a setting that cannot work, before anything is loaded or written."""
    for name in ("epochs", "batch_size", "step_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not 2 <= args.feat_dim <= MAX_FEAT_DIM:
        raise UserError(f"--feat_dim must be from 2 (a feature to draw and to compare by "
                        f"direction) to {MAX_FEAT_DIM}, got {args.feat_dim}")
    for name in ("lr", "center_lr", "gamma"):
        if not 0 < getattr(args, name) < math.inf:
            raise UserError(f"--{name} must be positive and finite, got {getattr(args, name)}")
    for name in ("momentum", "weight_decay", "loss_weight"):
        if not 0 <= getattr(args, name) < math.inf:
            raise UserError(f"--{name} must be finite and not negative, got {getattr(args, name)}")
    if args.momentum >= 1:
        raise UserError(f"--momentum must be below 1 (SGD's velocity grows without bound at 1 "
                        f"or more), got {args.momentum}")
    # the range every generator seeded from it takes (NumPy's is the narrowest)
    if not 0 <= args.seed < 2 ** 32:
        raise UserError(f"--seed must lie in 0 to 2**32 - 1, got {args.seed}")
    for name in ("max_train_samples", "max_test_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    names = class_names(args.dataset, dataset_dir=args.dataset_dir)  # a folder's: listed now
    # indices or names
    holdout_classes = set(parse_classes(args.dataset, args.holdout_classes, names))
    if len(holdout_classes) > len(names) - 2:
        raise UserError(f"--holdout_classes takes distinct classes and leaves at least two to "
                        f"train on (of {len(names)}), got {args.holdout_classes}")
    check_triplet_settings(args, len(names) - len(holdout_classes))
    check_head_settings(args.head, args.scale, args.margin)
    if args.tensorboard:
        tensorboard_writer()  # a missing package stops here, before anything is written
    device = pick_device(args.device)  # one that the machine lacks stops here
    if args.amp and not bf16_supported(device):
        raise UserError(f"--amp needs native bfloat16, which this {device.type.upper()} lacks "
                        "(on a CPU: AVX512-BF16 or AMX); train in float32 without --amp")



def check_triplet_settings(args, trained):
    """PK batches and the triplet loss, `trained` classes being trained: both sizes or
    neither, the pairs the loss needs, and the loss to learn the feature by when the head's
    is weighed 0. (K larger than a class, or P x K not shared evenly by torchrun's
    processes, is found when the data is loaded.)"""
    pk = (args.classes_per_batch, args.images_per_class)
    if (pk[0] is None) != (pk[1] is None):
        raise UserError("--classes_per_batch and --images_per_class go together: give both "
                        f"(P classes x K images a batch) or neither, got P={pk[0]}, K={pk[1]}")
    if pk[0] is not None and not 1 <= pk[0] <= trained:
        raise UserError(f"--classes_per_batch must be from 1 to the {trained} classes trained, "
                        f"got {pk[0]}")
    if pk[1] is not None and pk[1] < 1:
        raise UserError(f"--images_per_class must be at least 1, got {pk[1]}")
    for name in ("triplet_weight", "triplet_margin", "softmax_weight"):
        if not 0 <= getattr(args, name) < math.inf:
            raise UserError(f"--{name} must be finite and not negative, got {getattr(args, name)}")
    if args.triplet_weight and (pk[0] is None or min(pk) < 2):
        raise UserError("--triplet_weight needs PK batches with at least two classes and two "
                        "images of each, for its positives and negatives: add --classes_per_batch "
                        "P --images_per_class K with P, K >= 2 (e.g. 8 and 16)")
    if not args.softmax_weight and not args.triplet_weight:
        raise UserError("--softmax_weight 0 leaves the feature to the triplet loss: give "
                        "--triplet_weight too (the Center Loss alone pulls every feature onto "
                        "one point)")


def run_settings(args):
    """Checked settings (see `check_settings`) as the run uses them: held-out classes as
    sorted indices, the head's default scale and margin filled in, a dry run's one step,
    and the run's folder and templates absolute, so that its files can record them relative
    to its folder (a template is not normalised: a '..' in it stays, to be checked); the
    dataset's folder stays as given."""
    scale, margin = check_head_settings(args.head, args.scale, args.margin)
    changes = dict(holdout_classes=holdout_class_indices(args), scale=scale, margin=margin,
                   out_dir=str(Path(args.out_dir).resolve()),
                   **{name: str(Path.cwd() / getattr(args, name))
                      for name in ("model_path_temp", "vis_img_path_temp") if getattr(args, name)})
    if args.dry_run:  # one step of training and one test batch
        changes.update(max_train_samples=min(args.max_train_samples or args.batch_size,
                                             args.batch_size),
                       max_test_samples=min(args.max_test_samples or args.batch_size,
                                            args.batch_size),
                       epochs=1)
    return argparse.Namespace(**{**vars(args), **changes})


def holdout_class_indices(args):
    """The classes `args.holdout_classes` names (indices or names of `args.dataset`'s
    classes), as sorted indices: the form the run records and --resume compares."""
    names = class_names(args.dataset, dataset_dir=args.dataset_dir)
    return sorted(set(parse_classes(args.dataset, args.holdout_classes, names)))


def parse_classes(dataset, values, names=None, flag="--holdout_classes"):
    """Class indices from `values`, each a class name of `dataset` (any case; `names`: its
    names, needed for a folder dataset) or an index 0 to N-1, written in the ASCII digits
    0-9 only (a name wins: in a folder whose class folders are 1, 2, 10, "2" is the folder
    2); UserError, naming `flag` (where the values came from), for one that is neither."""
    names = class_names(dataset) if names is None else names
    by_name = {name.lower(): index for index, name in enumerate(names)}
    indices = []
    for value in values:
        text = str(value).strip()
        if text.lower() in by_name:
            indices.append(by_name[text.lower()])
        # not str.isdigit(): it takes digits such as "²" that int() cannot read
        elif re.fullmatch("[0-9]+", text) and int(text) < len(names):
            indices.append(int(text))
        else:
            raise UserError(f"{flag}: {value!r} is neither a class index "
                            f"0-{len(names) - 1} nor a class of {DATASETS[dataset].title} "
                            f"({', '.join(names)})")
    return indices
