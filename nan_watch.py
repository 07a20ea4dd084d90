"""Watching a run for NaN and infinite values without a host sync per step.

During an epoch, `NanWatch.step` notes on the device the first step at which each part
of the loss went bad; `NanWatch.check` reads that once (when the epoch's metrics are
read anyway) and raises `NonFiniteError`, whose message says what went bad, where, the
likely cause and what to do.
"""
import shlex

import torch

import distributed
from errors import UserError

# The parts of a training step watched for NaN and infinite values.
LOSS_PARTS = ("features", "softmax loss", "centre loss")
NEVER = 2 ** 30  # "no bad step" in a minimum over ranks


class NonFiniteError(UserError):
    """`parts` (of LOSS_PARTS, or "weights") became NaN or infinite at `step` of `epoch`."""

    def __init__(self, epoch, step, num_steps, parts):
        names = [f"the {part}" for part in parts]
        names = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
        super().__init__(f"{names} became NaN or infinite in epoch {epoch} at step {step} of {num_steps}")
        self.parts = parts


class NanWatch:
    def __init__(self, device):
        # For each of LOSS_PARTS, the first step at which it was not finite (NEVER: none).
        self.first_bad_step = torch.full((len(LOSS_PARTS),), NEVER, device=device)

    def step(self, step, features, softmax_loss, center_loss):
        finite = torch.stack((features.isfinite().all(), softmax_loss.isfinite(), center_loss.isfinite()))
        self.first_bad_step = torch.where(finite, self.first_bad_step, self.first_bad_step.clamp(max=step))

    def check(self, parameters, epoch, step, num_steps):
        """Raise NonFiniteError when a part of a step, or a weight after `step`, was not finite.
        Waits for the device."""
        weights_finite = torch.stack([parameter.isfinite().all() for parameter in parameters]).all()
        # Every rank stops together, on the first bad step of any of them.
        bad_steps = distributed.min_across_ranks(self.first_bad_step.clone()).tolist()
        first = min(bad_steps)
        if first < NEVER:
            raise NonFiniteError(epoch, first, num_steps,
                                 [part for part, bad in zip(LOSS_PARTS, bad_steps) if bad == first])
        if not weights_finite:
            raise NonFiniteError(epoch, step, num_steps, ["weights"])


def advice(error, args, last_good, command):
    """`error`'s message with the likely cause and what to do; `command` starts the resume line."""
    flag = "center_lr" if error.parts == ["centre loss"] else "lr"
    rate = getattr(args, flag)
    message = (f"{error}; the run stops without saving that epoch. The likely cause is a learning rate "
               f"too high (--{flag} {rate:g}); ")
    if last_good is None:
        return message + "no training state was saved yet: start again with a lower one"
    return message + (f"the last good training state is {last_good}: resume from it with a lower one, "
                      f"e.g. {command} --resume {shlex.quote(str(last_good))} --{flag} {rate / 10:g}")
