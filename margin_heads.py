"""The classification head on the 2-D feature: the article's softmax, or one of the
angular-margin heads of face recognition that followed Center Loss.

Every head uses `ip2`'s class weights W (num_classes x 2, no bias), so a checkpoint keeps
the article's keys and shapes whatever the head. With x the feature, theta_j the angle
between x and W_j, y the true class, s the scale and m the margin:

  softmax     W_j . x                                       (the article's ip2)
  normface    s cos(theta_j)                                (Wang et al. 2017)
  cosface     s (cos(theta_j) - m [j = y])                  (Wang et al. 2018)
  arcface     s cos(theta_y + m) for j = y, else s cos(theta_j)   (Deng et al. 2019);
              where theta_y + m passes pi, s (cos(theta_y) - m sin(m)), as insightface does,
              so that the logit keeps falling as theta_y grows
  sphereface  |x| psi(theta_y) for j = y, else |x| cos(theta_j),   (Liu et al. 2017)
              psi(theta) = (-1)^k cos(m theta) - 2k on [k pi / m, (k + 1) pi / m], mixed
              during training with |x| cos(theta_y) as the paper anneals it:
              (lambda |x| cos(theta_y) + |x| psi(theta_y)) / (1 + lambda),
              lambda = max(LAMBDA_MIN, LAMBDA_BASE / (1 + LAMBDA_GAMMA * iteration))

Below norm 1 NormFace, CosFace and ArcFace also scale their logits by |x| (NORM_FLOOR,
below; CosFace's margin excepted): the papers' x / |x| throws LeNets++'s tiny first
features about.

The margin applies in training (and the test loss) only. An angular head predicts the
class of the largest cosine: ip2's output would weigh the classes by their weights' norms,
which these heads never trained.
"""
import math

import torch
import torch.nn.functional as F

HEADS = ("softmax", "normface", "cosface", "arcface", "sphereface")
# Defaults for a 2-D feature and ten classes, where neighbouring classes lie about 36
# degrees apart: the papers' values for 512-D faces (s = 64, m = 0.35 or 0.5) leave no room
# there. CosFace's m = 0.2 would already exceed 1 - cos 36 deg, so not even a feature on its
# class weight could meet it; on all of MNIST it left four classes at the origin, their
# weights on one line, at 67-70% test accuracy over 4 epochs, where m = 0.1 separates them
# (docs/margin-heads.md). See the README's table of heads for how they train.
DEFAULT_SCALE = {"normface": 16.0, "cosface": 16.0, "arcface": 16.0}
DEFAULT_MARGIN = {"cosface": 0.1, "arcface": 0.2, "sphereface": 4}
# The largest values each setting may take, so that no value trains into an overflow or
# runs without end: a scale beyond MAX_SCALE (the papers use 30 to 64, this project 16)
# only multiplies the gradients, which blows up the first steps; CosFace's cosine margin
# at MAX_COSINE_MARGIN leaves the true class's logit below every other whatever the
# feature; ArcFace's angle margin stays below pi; SphereFace's m is a loop of m steps per
# batch, and its papers use 1 to 4.
MAX_SCALE = 1000.0
MAX_COSINE_MARGIN = 2.0
MAX_SPHEREFACE_MARGIN = 10
# SphereFace's annealing, from the authors' released training settings (base 1000,
# gamma 0.12, power 1, lambda_min 5).
LAMBDA_BASE, LAMBDA_GAMMA, LAMBDA_MIN = 1000.0, 0.12, 5.0
# NormFace, CosFace and ArcFace ignore the feature's norm, so their gradient grows as
# 1 / |x|. LeNets++ starts with features of norm near 0.01, where the network's gradient
# measured 200-330 at the first step on real MNIST, against 0.1 for the article's softmax,
# and CosFace went NaN within 200 steps (benchmarks/head_first_steps.py). So below norm
# NORM_FLOOR their logits are scaled by |x| / NORM_FLOOR: the head sees x / max(|x|, 1)
# instead of x / |x|, its gradient stays bounded, and it pushes small features outwards;
# beyond the floor it is the paper's head exactly. CosFace's margin is not damped: below the
# floor its logits are s (x . w_j / |w_j|) - s m at the true class, a linear classifier with
# the margin as a constant handicap (docs/margin-heads.md).
NORM_FLOOR = 1.0
COSINE_EPS = 1e-6  # keeps sqrt(1 - cos^2)'s gradient finite at cos = +-1


class HeadSettingsError(ValueError):
    """A head's setting it cannot use; the message, one line, names the flag and the value
    (the scripts print it as the user's error to fix)."""


def check_head_settings(head, scale, margin):
    """The head's scale and margin, defaults filled in; HeadSettingsError for values it
    cannot use."""
    if head not in HEADS:
        raise HeadSettingsError(f"--head must be one of {', '.join(HEADS)}, got {head!r}")
    for flag, value, defaults in (("--scale", scale, DEFAULT_SCALE),
                                  ("--margin", margin, DEFAULT_MARGIN)):
        if value is not None and head not in defaults:
            raise HeadSettingsError(f"{flag} does not apply to --head {head}"
                             + (" (its scale is the feature's norm)"
                                if head == "sphereface" else ""))
        if value is not None and not 0 <= value < math.inf:
            raise HeadSettingsError(f"{flag} must be finite and not negative, got {value}")
    scale = DEFAULT_SCALE.get(head) if scale is None else scale
    margin = DEFAULT_MARGIN.get(head) if margin is None else margin
    if scale is not None and scale <= 0:
        raise HeadSettingsError(f"--scale must be positive, got {scale}")
    if scale is not None and scale > MAX_SCALE:
        raise HeadSettingsError(f"--scale must be at most {MAX_SCALE:g} (it multiplies the "
                                f"gradients; the papers use 30 to 64), got {scale:g}")
    if head == "sphereface":
        if margin != int(margin) or not 1 <= margin <= MAX_SPHEREFACE_MARGIN:
            raise HeadSettingsError("--margin of sphereface multiplies the angle and must be an "
                                    f"integer from 1 to {MAX_SPHEREFACE_MARGIN}, got {margin}")
        margin = int(margin)
    if head == "cosface" and margin >= MAX_COSINE_MARGIN:
        raise HeadSettingsError(f"--margin of cosface is a cosine margin and must be below "
                                f"{MAX_COSINE_MARGIN:g} (cosines differ by 2 at most), "
                                f"got {margin:g}")
    if head == "arcface" and margin >= math.pi:
        raise HeadSettingsError("--margin of arcface is an angle in radians and must be below pi, "
                                f"got {margin}")
    return scale, margin


def cosines(features, weight):
    """cos(theta_j) of every feature (N, D) with every class weight (C, D), in float32."""
    return F.linear(F.normalize(features.float(), dim=1), F.normalize(weight.float(), dim=1))


def chebyshev(cosine, m):
    """cos(m theta) from cos(theta): the Chebyshev polynomial T_m, smooth at cos = +-1."""
    previous, current = torch.ones_like(cosine), cosine
    for _ in range(m - 1):
        previous, current = current, 2 * cosine * current - previous
    return current if m > 0 else previous


def sphereface_lambda(iteration):
    return max(LAMBDA_MIN, LAMBDA_BASE / (1 + LAMBDA_GAMMA * iteration))


class Head:
    """The head `name` on the class weights `weight` (ip2.weight, a live parameter)."""

    def __init__(self, name="softmax", weight=None, scale=None, margin=None):
        self.name, self.weight = name, weight
        self.scale, self.margin = check_head_settings(name, scale, margin)
        self.angular = name != "softmax"
        self.norm_floor = NORM_FLOOR
        self.iteration = 0  # the last training step, whose SphereFace lambda the test loss uses

    def logits(self, features, labels, iteration=0, mix=None):
        """The angular head's logits with its margin at each true class `labels`, in float32
        (outside autocast: the angles of a 2-D feature need its precision). SphereFace mixes
        in the plain cosine by `mix`, by default lambda at training step `iteration`."""
        with torch.autocast(features.device.type, enabled=False):
            cosine = cosines(features, self.weight)
            target = cosine.gather(1, labels.unsqueeze(1))
            # cosface's margin comes after the norm floor
            if self.name in ("normface", "cosface"):
                margined = target
            elif self.name == "arcface":
                sine = (1 - target.square()).clamp(min=COSINE_EPS).sqrt()
                margined = torch.where(target >= -math.cos(self.margin),  # theta + m <= pi
                                       target * math.cos(self.margin)
                                       - sine * math.sin(self.margin),
                                       target - self.margin * math.sin(self.margin))
            else:  # sphereface
                with torch.no_grad():
                    k = (torch.acos(target.clamp(-1, 1)) * self.margin
                         / math.pi).floor().clamp(max=self.margin - 1)
                psi = (1 - 2 * (k % 2)) * chebyshev(target, self.margin) - 2 * k
                mix = sphereface_lambda(iteration) if mix is None else mix
                margined = (mix * target + psi) / (1 + mix)
            logits = cosine.scatter(1, labels.unsqueeze(1), margined)
            norm = features.float().norm(dim=1, keepdim=True)
            if self.name == "sphereface":
                return logits * norm
            logits = self.scale * logits * (norm / self.norm_floor).clamp(max=1)
            if self.name == "cosface":
                # Whole below the floor too: damped by |x| with the rest, the margin pulled every
                # feature towards the origin with force s * m and trapped classes there.
                logits = logits.scatter_add(1, labels.unsqueeze(1),
                                            logits.new_full((len(labels), 1),
                                                            -self.scale * self.margin))
            return logits

    def __call__(self, features, log_probs, labels, iteration=None):
        """The log-probabilities the loss is taken of: the article's `log_probs` for
        softmax, else the head's with its margin, as at training step `iteration` (by
        default the last one given: a test pass scores the epoch's end)."""
        self.iteration = self.iteration if iteration is None else iteration
        if not self.angular:
            return log_probs
        return F.log_softmax(self.logits(features, labels, self.iteration), dim=1)

    def predict(self, features, log_probs):
        """The predicted class of each feature: the largest ip2 output, or the largest cosine."""
        return cosines(features, self.weight).argmax(1) if self.angular else log_probs.argmax(1)

    def retrieval_features(self, features):
        """The features as retrieval compares them: as they are for softmax; on the unit
        circle for an angular head, which is trained on directions alone (so Euclidean
        distance there ranks by cosine, as face recognition compares its embeddings)."""
        return F.normalize(features.float(), dim=1) if self.angular else features

    def class_directions(self, classes):
        """For an angular head, {digit: its class weight} on the host (a copy: a picture
        drawn later must not see it change); None for softmax, which has no angular view."""
        return (dict(zip(map(int, classes), self.weight.detach().float().cpu()))
                if self.angular else None)

    def decision_weight(self):
        """Weights whose largest dot product with a point is the predicted class there (for
        pictures of the decision regions): W, or for an angular head W normalised."""
        weight = self.weight.detach().float()
        return F.normalize(weight, dim=1) if self.angular else weight
