"""Watching a run for NaN, infinite and blown-up values, without a host sync per step.

During an epoch, `NanWatch.step` notes on the device the first step at which each part
of a training step went bad (a feature NaN, infinite or beyond FEATURE_NORM_LIMIT in
norm; a loss NaN or infinite) and the largest feature norm up to that step. `NanWatch.check`
reads that once (when the epoch's metrics are read anyway) and raises `NonFiniteError`. `remedy`
reads the likely cause and the setting to change from the evidence; the run's state keeper
turns them into a resume from the last state known to be good.
"""
import torch

from margin_heads import DEFAULT_SCALE
from mnist_loader import DATASETS

from . import distributed
from .errors import UserError

# The parts of a training step watched.
LOSS_PARTS = ("features", "softmax loss", "centre loss")
# A 2-D feature of a healthy run stays within a few hundred of the origin; far beyond
# that the next steps overflow, and a state holding such weights cannot be resumed from.
FEATURE_NORM_LIMIT = 1e6
NEVER = 2 ** 30  # "no bad step" in a minimum over ranks
# The least standard deviation of a training split's pixels (0 to 1) that normalises it:
# dividing by less magnifies the images' faint differences into huge inputs (images all
# one value have 0, a division by zero).
MIN_DATA_STD = 0.01
# Below this spread, a run that blows up is taken to blow up from its data.
LOW_DATA_STD = 0.05


class NonFiniteError(UserError):
    """`parts` went bad `where` ("in epoch 3 at step 5 of 8"); the evidence for the advice:
    whether the network's weights and the centres are still finite, the largest feature norm."""

    def __init__(self, parts, where, network_finite=True, centers_finite=True,
                 max_feature_norm=None):
        troubles = [f"the {part} blew up (NaN, infinite or a norm over {FEATURE_NORM_LIMIT:g})"
                    if part.endswith("features") else f"the {part} became NaN or infinite"
                    for part in parts]
        largest = (f" (largest feature norm {max_feature_norm:.3g})"
                   if max_feature_norm is not None else "")
        super().__init__(" and ".join(troubles) + f" {where}{largest}")
        self.parts, self.network_finite, self.centers_finite = parts, network_finite, centers_finite
        self.max_feature_norm = max_feature_norm


class NanWatch:
    def __init__(self, device):
        # For each of LOSS_PARTS, the first step at which it went bad (NEVER: none).
        self.first_bad_step = torch.full((len(LOSS_PARTS),), NEVER, device=device)
        self.max_feature_norm = torch.zeros((), device=device)

    def step(self, step, features, softmax_loss, center_loss):
        norm = features.detach().float().norm(dim=1).max().nan_to_num(nan=torch.inf)
        # The evidence of the first bad step, not of the steps that went on from it.
        went_bad = self.first_bad_step.min() < NEVER
        self.max_feature_norm = torch.where(went_bad, self.max_feature_norm,
                                            torch.maximum(self.max_feature_norm, norm))
        good = torch.stack((norm <= FEATURE_NORM_LIMIT, softmax_loss.isfinite(),
                            center_loss.isfinite()))
        self.first_bad_step = torch.where(good, self.first_bad_step,
                                          self.first_bad_step.clamp(max=step))

    def check(self, network, centers, epoch, step, num_steps):
        """Raise NonFiniteError when a part of a step went bad, or a weight (of the `network`'s
        parameters or the `centers`) is not finite after `step`. Waits for the device."""
        finite = torch.stack([torch.stack([p.isfinite().all() for p in network]).all(),
                              centers.isfinite().all()])
        # Every rank stops together, on the first bad step of any of them.
        bad_steps = distributed.min_across_ranks(self.first_bad_step.clone()).tolist()
        network_finite, centers_finite = finite.tolist()
        evidence = dict(network_finite=network_finite, centers_finite=centers_finite,
                        max_feature_norm=self.max_feature_norm.item())
        first = min(bad_steps)
        if first < NEVER:
            parts = [part for part, bad in zip(LOSS_PARTS, bad_steps) if bad == first]
            raise NonFiniteError(parts, f"in epoch {epoch} at step {first} of {num_steps}",
                                 **evidence)
        parts = []
        if not network_finite:
            parts.append("network's weights")
        if not centers_finite:
            parts.append("centres")
        if parts:
            raise NonFiniteError(parts, f"in epoch {epoch} at step {step} of {num_steps}",
                                 **evidence)


def check_test_pass(features, loss):
    """Raise NonFiniteError when the test pass gave bad features or a bad loss (`loss` a float)."""
    norm = (features.float().norm(dim=1).max().nan_to_num(nan=torch.inf).item()
            if features.numel() else 0.0)
    parts = []
    if norm > FEATURE_NORM_LIMIT:
        parts.append("test features")
    if not abs(loss) < torch.inf:
        parts.append("test loss")
    if parts:
        raise NonFiniteError(parts, "in the test pass after the epoch's training",
                             max_feature_norm=norm)


def training_images(settings):
    """The training images of a run's `settings`, in words."""
    return (f"the training images of {DATASETS[settings.dataset].title} in "
            f"{settings.dataset_dir}")


def check_data_spread(std, settings):
    """UserError naming the data, before training, when the training split's standard
    deviation `std` (of pixel values 0 to 1) is too small to normalise by."""
    if not std >= MIN_DATA_STD:  # NaN too
        raise UserError(f"{training_images(settings)} have a standard deviation of {std:g} "
                        f"(pixel values 0 to 1), less than the {MIN_DATA_STD:g} that "
                        f"normalising them needs: they are all, or nearly all, one value; "
                        f"give --dataset_dir images that differ")


def remedy(error, settings, article_defaults, epoch_lr, data_std=None):
    """The likely cause of `error` from its evidence, and the flag to change with its new
    value, e.g. "--lr 0.001": the article's (`article_defaults`) when the run's is higher,
    else a tenth of the run's; for a margin head's scale above its default (which multiplies
    the gradients), the default. `epoch_lr` is the network's rate in the epoch that went bad.
    Training images of little spread (`data_std`, their standard deviation, under
    LOW_DATA_STD) are the cause, with no flag to change (None)."""
    if data_std is not None and data_std < LOW_DATA_STD:
        return (f"{training_images(settings)} vary little (standard deviation {data_std:g} of "
                f"pixel values 0 to 1): normalised by it, their faint differences become huge "
                f"inputs"), None
    default_scale = DEFAULT_SCALE.get(settings.head)
    if epoch_lr > settings.lr * (1 + 1e-9):
        cause = (f"the schedule raised the network's learning rate to {epoch_lr:g} "
                 f"(--gamma {settings.gamma:g} every --step_size {settings.step_size} epochs)")
        name = "gamma"
    elif error.parts == ["centres"] or (error.parts == ["centre loss"] and
                                        (error.max_feature_norm or 0) <= FEATURE_NORM_LIMIT):
        cause = f"the centres' learning rate is too high (--center_lr {settings.center_lr:g})"
        name = "center_lr"
    elif default_scale is not None and settings.scale > default_scale:
        return (f"the head's logit scale is too high (--scale {settings.scale:g}; "
                f"{settings.head}'s default is {default_scale:g})"), f"--scale {default_scale:g}"
    else:
        rate = f"--lr {settings.lr:g}" + (f", {epoch_lr:g} in this epoch"
                                          if epoch_lr != settings.lr else "")
        cause = f"the network's learning rate is too high ({rate})"
        name = "lr"
    run_value, article_value = getattr(settings, name), getattr(article_defaults, name)
    new_value = article_value if name == "gamma" or run_value > article_value else run_value / 10
    return cause, f"--{name} {new_value:g}"
