"""Pictures of the embedding: feature scatter plots, decision regions, training curves
and the animation of the features over the epochs. A 2-D feature is drawn as it is (the
article's pictures), a 3-D one in 3-D, a wider one by its two principal axes (PCA).

Figures are made with `matplotlib.figure.Figure`, not pyplot: they need no display and
are freed with their last reference, so a long run leaks no open figure. Every picture of
features is made of equal panels (`panel_axes`) and colours its classes by `class_colors`.
"""
import io
import os
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import ListedColormap, to_hex
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.patheffects import withStroke
from matplotlib.textpath import TextPath
from matplotlib.ticker import MaxNLocator
from PIL import Image

from mnist_loader import show_data

from .checkpointing import atomic_write, save_figure

# The class colours, one per digit 0-9 (and per class of any dataset of up to 20 classes):
# chosen and checked by benchmarks/palette.py. Every two of the first ten stay apart for
# normal vision and for simulated deuteranopia, protanopia and tritanopia, and differ in hue,
# not in lightness alone; the next ten stay apart for normal vision
# (docs/evaluation.md#the-class-colours).
CLASS_COLORS = ("#99cc00", "#881188", "#990000", "#dd2277", "#7722ff",
                "#22ccff", "#226655", "#997700", "#ccaa99", "#7788aa",
                "#dd8844", "#5599ff", "#7766aa", "#557744", "#999999",
                "#882233", "#ee99cc", "#7722bb", "#ff55cc", "#00bb66")
TEN = 10  # the classes whose colours are checked for colour-blind readers
OUTLINE = withStroke(linewidth=3.5, foreground="black")  # keeps a light line seen on white
# Each panel of a feature picture, in inches at DPI dots an inch: square axes, a margin for
# the tick labels on the left and below, the title above and the legend on the right.
PANEL_INCHES, DPI = (8, 7), 100
AXES_INCHES = (1.0, 0.6, 5.5)  # left, bottom, side


def as_numpy(values):
    return torch.as_tensor(values).detach().cpu().numpy()


def class_colors(class_names=None, labels=()):
    """The colour of each class, by label: CLASS_COLORS for up to 20 classes, else one for
    each along the turbo colormap, evenly spaced. The classes are those `class_names` names,
    or without names those of `labels` (at least MNIST's ten)."""
    labels = as_numpy(labels)
    count = (len(class_names) if class_names
             else max(TEN, int(labels.max()) + 1 if labels.size else 0))
    if count <= len(CLASS_COLORS):
        return CLASS_COLORS[:count]
    return tuple(to_hex(color) for color in colormaps["turbo"](np.linspace(0, 1, count)))


def panel_figure(columns, rows=1):
    """A figure of `rows` x `columns` panels of PANEL_INCHES each, for `panel_axes`."""
    return Figure(figsize=(PANEL_INCHES[0] * columns, PANEL_INCHES[1] * rows), dpi=DPI)


def panel_axes(fig, position, three_d=False):
    """New axes in the panel at `position` (rows, columns, index from 1, as add_subplot's) of
    a `panel_figure`: at the same place in every panel and of the same size, 2-D or 3-D."""
    rows, columns, index = position
    row, column = divmod(index - 1, columns)
    left, bottom, side = AXES_INCHES
    width, height = PANEL_INCHES[0] * columns, PANEL_INCHES[1] * rows
    rect = ((column * PANEL_INCHES[0] + left) / width,
            ((rows - 1 - row) * PANEL_INCHES[1] + bottom) / height, side / width, side / height)
    return fig.add_axes(rect, projection="3d" if three_d else None)


def shown_as(width):
    """How a feature of `width` dimensions is drawn, for a title: "" (2-D, as it is),
    " (3-D)", " (8-D, principal axes)"."""
    return "" if width == 2 else f" ({width}-D" + (")" if width == 3 else ", principal axes)")


def classes_to_draw(feat, labels, holdout_classes, class_names):
    """For each class present in `labels`, in the order of its label: its points, its
    colour, whether it is unseen (held out), and its legend entry."""
    for label, color in enumerate(class_colors(class_names, labels)):
        points = feat[labels == label]
        if len(points):
            unseen = label in holdout_classes
            name = class_names[label] if class_names else str(label)
            entry = Line2D([], [], linestyle="", marker="X" if unseen else "o", color=color,
                           label=f"{name} (unseen)" if unseen else name)
            yield points, color, unseen, entry


def draw_features(ax, feat, labels, centers=None, holdout_classes=(), class_names=None):
    """Scatter 2-D features on `ax`, coloured by class (the digit, for MNIST), with the
    centres and a legend naming each class by `class_names` (default: its index).

    Held-out (unseen) digits are drawn as crosses, the others as dots. The axes are fitted to the
    data, never clipping a point; equal scales keep the angles between classes true, since the
    bias-free classifier separates them by angle.
    """
    feat, labels = as_numpy(feat), as_numpy(labels)
    legend = []
    for points, color, unseen, entry in classes_to_draw(feat, labels, holdout_classes, class_names):
        marker, size = ("x", 3) if unseen else (".", 2)
        ax.plot(points[:, 0], points[:, 1], marker, color=color, markersize=size, linestyle="")
        legend.append(entry)
    if centers is not None:
        centers = as_numpy(centers)
        ax.plot(centers[:, 0], centers[:, 1], "X", color="black", markeredgecolor="white",
                markersize=9, linestyle="")
        legend.append(Line2D([], [], linestyle="", marker="X", color="black", label="centres"))
    # The legend sits right of the axes, so it hides no point.
    ax.legend(handles=legend, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(True, linewidth=0.3)
    ax.set_xlabel("feature 1")
    ax.set_ylabel("feature 2")


def draw_directions(ax, feat, labels, class_directions, holdout_classes=(), class_names=None):
    """The angular view of an angular-margin head: each feature scaled onto the unit circle,
    and each class weight's direction drawn from the origin in its class's colour
    (`class_directions`: class -> 2-vector), so the angles between the classes show. The
    names of directions closer than a label's width are spread apart along the circle."""
    feat = as_numpy(feat)
    unit = feat / np.maximum(np.linalg.norm(feat, axis=1, keepdims=True), 1e-12)
    draw_features(ax, unit, labels, holdout_classes=holdout_classes, class_names=class_names)
    colors = class_colors(class_names, [*class_directions, *as_numpy(labels)])
    ends = {label: as_numpy(direction) / max(float(np.linalg.norm(as_numpy(direction))), 1e-12)
            for label, direction in class_directions.items()}
    names = [class_names[label] if class_names else str(label) for label in ends]
    ax.set_xlim(-1.5, 1.5)
    ax.set_ylim(-1.5, 1.5)  # the unit circle, and the class directions with names beyond it
    ax.set_aspect("equal", adjustable="box")
    # Two names are a name's width or height apart at least, whichever is larger, on the
    # circle of radius 1.33 where they are written.
    name_pixels = max([max(extent.width, extent.height) * ax.figure.dpi / 72 + 6  # the outline
                       for extent in (TextPath((0, 0), name, size=LABEL_POINTS,
                                               prop=FontProperties(weight="bold")).get_extents()
                                      for name in names)], default=0)
    angles = spread_angles([np.arctan2(y, x) for x, y in ends.values()],
                           name_pixels / (1.33 * ax.bbox.width / 3))
    for (label, end), name, angle in zip(ends.items(), names, angles):
        ax.plot(*zip((0, 0), end * 1.25), "-", color=colors[label], linewidth=2,
                path_effects=[OUTLINE])
        place = np.array([np.cos(angle), np.sin(angle)])
        ax.plot(*zip(end * 1.25, place * 1.25), "-", color=colors[label], linewidth=1)
        ax.annotate(name, tuple(place * 1.33), ha="center", va="center",
                    fontsize=LABEL_POINTS, fontweight="bold", color=colors[label],
                    path_effects=[OUTLINE])
    ax.set_xlabel("feature 1 / |feature|")
    ax.set_ylabel("feature 2 / |feature|")


LABEL_POINTS = 9  # the font size of the class names by their directions


def spread_angles(angles, gap):
    """`angles` (radians) moved apart along the circle, keeping their order, so that every
    two neighbours are at least `gap` apart: each crowd is spaced by `gap` about the mean of
    its angles. With no room for that (more than 2 pi / gap of them), all are evenly spaced."""
    angles = np.asarray(angles, dtype=float)
    count = len(angles)
    if count < 2:
        return angles
    order = np.argsort(angles)
    ordered = angles[order]
    # Unroll the circle at the widest gap between neighbours: no crowd spans it.
    start = int(np.argmax(np.diff(ordered, append=ordered[0] + 2 * np.pi))) + 1
    line = np.concatenate([ordered[start:], ordered[:start] + 2 * np.pi])
    crowds = [[index] for index in range(count)]

    def spaced(crowd):
        return line[crowd].mean() + (np.arange(len(crowd)) - (len(crowd) - 1) / 2) * gap

    merged = True
    while merged:  # merge neighbouring crowds that would overlap, until none do
        merged = False
        for index in range(len(crowds) - 1):
            if spaced(crowds[index])[-1] + gap > spaced(crowds[index + 1])[0] + 1e-9:
                crowds[index:index + 2] = [crowds[index] + crowds[index + 1]]
                merged = True
                break
    spread = np.concatenate([spaced(crowd) for crowd in crowds])
    if spread[-1] - spread[0] > 2 * np.pi - gap:  # the ends meet round the circle
        even = np.arange(count) * 2 * np.pi / count
        spread = even + (line - even).mean()
    placed = np.empty(count)
    placed[np.roll(order, -start)] = spread
    return placed


def epoch_figure(epoch, feat, labels, centers=None, test_feat=None, test_labels=None,
                 holdout_classes=(), class_directions=None, class_names=None):
    """The feature plot of one epoch: the training features with the centres, beside them
    the test features when given, and for an angular head their directions with each class
    weight's (`class_directions`: class -> weight); the legend names the classes by
    `class_names` (default: their indices, MNIST's digits). Features of 3 dimensions are
    drawn in 3-D; wider ones on the two principal axes of the training features."""
    width = torch.as_tensor(feat).shape[1]
    if width > 3:
        plane = PrincipalPlane(feat)
        feat, test_feat, centers = (None if points is None else plane.points(points)
                                    for points in (feat, test_feat, centers))
        class_directions = plane.directions(class_directions)
    titles = [f"training features{shown_as(width)}, epoch = {epoch}"]
    titles += [] if test_feat is None else [f"test features (eval mode), epoch = {epoch}"]
    titles += ([] if class_directions is None
               else [f"test feature directions and class weights, epoch = {epoch}"])
    panels = len(titles)
    fig = panel_figure(panels)
    axes = [panel_axes(fig, (1, panels, index + 1), width == 3) for index in range(panels)]
    draw = draw_features_3d if width == 3 else draw_features
    draw(axes[0], feat, labels, centers, holdout_classes, class_names)
    if test_feat is not None:
        draw(axes[1], test_feat, test_labels, centers, holdout_classes, class_names)
    if class_directions is not None:
        (draw_directions_3d if width == 3 else draw_directions)(
            axes[-1], test_feat, test_labels, class_directions, holdout_classes, class_names)
    for ax, title in zip(axes, titles):
        ax.set_title(title)
    if width > 3:
        for ax in axes:
            ax.set_xlabel("principal axis 1")
            ax.set_ylabel("principal axis 2")
    return fig


def draw_embedding(fig, position, feat, labels, centers=None, holdout_classes=(),
                   class_names=None):
    """New axes in the panel at `position` (rows, columns, index) of a `panel_figure` with
    the features drawn as the epoch pictures draw them: 2-D as they are, 3-D in 3-D, wider
    ones on their principal axes (the centres with them). Returns the axes."""
    width = torch.as_tensor(feat).shape[1]
    ax = panel_axes(fig, position, width == 3)
    if width > 3:
        plane = PrincipalPlane(feat)
        feat, centers = plane.points(feat), None if centers is None else plane.points(centers)
    (draw_features_3d if width == 3 else draw_features)(ax, feat, labels, centers,
                                                        holdout_classes, class_names)
    if width > 3:
        ax.set_xlabel(f"principal axis 1 of {width}")
        ax.set_ylabel(f"principal axis 2 of {width}")
    return ax


class PrincipalPlane:
    """The plane of the two principal axes of `features` (N, D): where their spread shows
    most. `points` projects features (or centres) onto it, `directions` class weights."""

    def __init__(self, features):
        features = torch.as_tensor(features).detach().float().cpu()
        self.mean = features.mean(0)
        # The right singular vectors of the centred features are the principal axes.
        self.axes = torch.linalg.svd(features - self.mean, full_matrices=False).Vh[:2].T

    def points(self, features):
        return (torch.as_tensor(features).detach().float().cpu() - self.mean) @ self.axes

    def directions(self, class_directions):
        if class_directions is None:
            return None
        return {label: direction.float() @ self.axes
                for label, direction in class_directions.items()}


def draw_features_3d(ax, feat, labels, centers=None, holdout_classes=(), class_names=None):
    """`draw_features` in 3-D: a scatter of 3-D features on the 3-D axes `ax`."""
    feat, labels = as_numpy(feat), as_numpy(labels)
    legend = []
    for points, color, unseen, entry in classes_to_draw(feat, labels, holdout_classes, class_names):
        ax.scatter(*points.T, marker="x" if unseen else ".", color=color, s=4 if unseen else 2,
                   depthshade=False)
        legend.append(entry)
    shown = feat
    if centers is not None:
        centers = as_numpy(centers)
        ax.scatter(*centers.T, marker="X", color="black", edgecolor="white", s=60,
                   depthshade=False)
        legend.append(Line2D([], [], linestyle="", marker="X", color="black", label="centres"))
        shown = np.concatenate([feat, centers])
    ax.legend(handles=legend, loc="center left", bbox_to_anchor=(1.06, 0.5), fontsize="small")
    fit_cube(ax, shown.min(0), shown.max(0))  # no point and no centre clipped
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.set_major_locator(MaxNLocator(5))  # the cube's edges are short: few tick labels
    ax.set_xlabel("feature 1")
    ax.set_ylabel("feature 2")
    ax.set_zlabel("feature 3")


def fit_cube(ax, low, high):
    """3-D axes limits: a cube that holds every point from `low` to `high` (3-vectors), at
    equal scales, which keep the angles between classes true."""
    ax.set_box_aspect((1, 1, 1))
    half = 0.55 * (high - low).max() + 1e-6
    for set_limits, middle in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), (low + high) / 2):
        set_limits(middle - half, middle + half)


def draw_directions_3d(ax, feat, labels, class_directions, holdout_classes=(), class_names=None):
    """`draw_directions` in 3-D: the features on the unit sphere, each class weight's
    direction drawn from the origin in its class's colour."""
    feat = as_numpy(feat)
    unit = feat / np.maximum(np.linalg.norm(feat, axis=1, keepdims=True), 1e-12)
    draw_features_3d(ax, unit, labels, holdout_classes=holdout_classes, class_names=class_names)
    colors = class_colors(class_names, [*class_directions, *as_numpy(labels)])
    for label, direction in class_directions.items():
        end = as_numpy(direction) / max(float(np.linalg.norm(as_numpy(direction))), 1e-12) * 1.25
        ax.plot(*zip((0, 0, 0), end), "-", color=colors[label], linewidth=2,
                path_effects=[OUTLINE])
        ax.text(*end, class_names[label] if class_names else str(label), fontsize=9,
                fontweight="bold", color=colors[label], path_effects=[OUTLINE])
    for set_limits in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
        set_limits(-1.3, 1.3)  # the unit sphere, and the class directions beyond it


def draw_decision_regions(ax, classifier_weight, classes, resolution=400, class_names=None):
    """Shade the plane by the class that `ip2` (no bias) predicts there: wedges from the
    origin, since the prediction argmax_k w_k . x depends on the direction of x alone.
    `classes`: the label of each row of the weight; `class_names`: all the classes' names."""
    ax.apply_aspect()  # settle the data limits to the equal scales in the axes' own box
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    xs, ys = np.meshgrid(np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution))
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
    predicted = (grid @ as_numpy(classifier_weight).T).argmax(1).reshape(xs.shape)
    colors = class_colors(class_names, classes)
    colors = ListedColormap([colors[label] for label in classes])
    ax.imshow(predicted, extent=(x0, x1, y0, y1), origin="lower", cmap=colors, alpha=0.18,
              vmin=-0.5, vmax=len(classes) - 0.5, interpolation="nearest", zorder=0,
              aspect="auto")
    # Keep the settled limits: the shading must cover exactly the visible plane.
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)


def ranking_figure(images, labels, queries, neighbours, class_names):
    """A figure of retrieval, one row per query: the query image, then its nearest gallery
    images in order, each framed green when of the query's class and red otherwise, titled
    with its class name. `images` (N, H, W) in 0-1, `neighbours` (len(queries), k)."""
    images, labels = as_numpy(images), as_numpy(labels)
    rows, k = neighbours.shape
    height = 1.25 * rows + 0.8  # inches: a row each, and the title
    fig = Figure(figsize=(1.1 * (k + 1.4), height), dpi=80)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.75 / height,
                        wspace=0.15, hspace=0.35)
    grid = fig.add_gridspec(rows, k + 2, width_ratios=[1, 0.4, *[1] * k])
    for row, (query, found) in enumerate(zip(as_numpy(queries), as_numpy(neighbours))):
        # blue: the query (the title says so)
        cells = [(0, query, "tab:blue", class_names[labels[query]])]
        cells += [(column + 2, item, "tab:green" if labels[item] == labels[query] else "tab:red",
                   class_names[labels[item]]) for column, item in enumerate(found)]
        for column, item, color, title in cells:
            ax = fig.add_subplot(grid[row, column])
            ax.imshow(images[item], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=8, color=color)
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(3)
    fig.suptitle(f"each query (blue) and its {k} nearest test images, nearest first "
                 f"(green: same class, red: another)" if k else
                 "each query (blue): no other test image to retrieve", fontsize=10,
                 y=1 - 0.2 / height)
    return fig


# Genuine and impostor pairs in the verification picture: not class colours; an orange and a
# purple that stay apart for colour-blind readers.
PAIR_COLORS = {"genuine": "#e66100", "impostor": "#5d3a9b"}


def verification_figure(far, tar, edges, genuine_share, impostor_share, marks, threshold,
                        threshold_label, title):
    """The verification picture: left, the ROC (TAR against FAR, log FAR) with `marks`
    ((FAR, TAR, label) points) on it; right, the shares of genuine and impostor pairs by
    distance (`edges` of the bins, log shares) with `threshold` marked, `threshold_label`
    saying what it is. Returns the figure."""
    fig = panel_figure(2)
    roc_ax, histogram_ax = panel_axes(fig, (1, 2, 1)), panel_axes(fig, (1, 2, 2))
    far, tar = as_numpy(far), as_numpy(tar)
    shown = far > 0  # a log axis has no 0
    roc_ax.plot(far[shown], tar[shown], "-", color="black", linewidth=1.5, label="ROC")
    for (mark_far, mark_tar, label), marker in zip(marks, "os^vDP*"):
        roc_ax.plot([mark_far], [mark_tar], marker, markersize=8, linestyle="", label=label)
    roc_ax.set_xscale("log")
    roc_ax.set_xlim(far[shown].min() if shown.any() else 1e-6, 1)
    roc_ax.set_ylim(0, 1.01)
    roc_ax.set_xlabel("FAR (impostor pairs accepted)")
    roc_ax.set_ylabel("TAR (genuine pairs accepted)")
    roc_ax.set_title(title)
    for kind, shares in (("genuine", genuine_share), ("impostor", impostor_share)):
        histogram_ax.stairs(np.where(shares > 0, shares, np.nan), edges, color=PAIR_COLORS[kind],
                            linewidth=1.8, label=f"{kind} pairs")
    histogram_ax.axvline(threshold, color="black", linestyle="--", linewidth=1.2,
                         label=threshold_label)
    histogram_ax.set_yscale("log")
    histogram_ax.set_xlim(edges[0], edges[-1])
    histogram_ax.set_xlabel("distance of the pair's features")
    histogram_ax.set_ylabel("share of the pairs of its kind")
    histogram_ax.set_title("distances of genuine and impostor pairs")
    # The legends inside the axes, where the curves leave room: the two panels are side by side.
    for ax, corner in ((roc_ax, "lower right"), (histogram_ax, "upper right")):
        ax.grid(True, linewidth=0.3)
        ax.legend(loc=corner, fontsize="small")
    return fig


def plot_curves(history, path):
    """Loss and accuracy against epoch, training and test, from the history rows."""
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(11, 4.5), dpi=100)
    # Fixed margins: tight_layout would draw the figure twice, every epoch.
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.92, wspace=0.2)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for split, color in (("train", "tab:blue"), ("test", "tab:orange")):
        loss_ax.plot(epochs, [row[f"{split}_loss"] for row in history], "-o", color=color,
                     markersize=3, label=f"{split} loss")
        loss_ax.plot(epochs, [row[f"{split}_center_loss"] for row in history], "--", color=color,
                     label=f"{split} centre-loss part")
        acc_ax.plot(epochs, [row[f"{split}_acc"] for row in history], "-o", color=color,
                    markersize=3, label=f"{split} accuracy")
    acc_ax.plot(epochs, [row["map_at_r"] for row in history], "-^", color="tab:green", markersize=3,
                label="test MAP@R")
    loss_ax.set_yscale("log")
    loss_ax.set_title("loss (mean per image)")
    acc_ax.set_title("accuracy and retrieval")
    acc_ax.set_ylim(0, 1)
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, linewidth=0.3)
        ax.legend(fontsize="small")
    save_figure(fig, path)


def write_feature_gif(features_per_epoch, labels, path, holdout_classes=(), epochs=None,
                      seconds_per_frame=0.4, angular=False, class_names=None):
    """An animated GIF of the features epoch by epoch, in panels of the epoch picture's size,
    with one square range for the whole run so that the motion is readable; with `angular`
    (an angular head), their directions on the unit circle beside them.
    `features_per_epoch`: (epochs, N, D); 3-D features are drawn in 3-D, wider ones on the
    principal axes of the last epoch's."""
    width = torch.as_tensor(features_per_epoch).shape[-1]
    if width > 3:
        plane = PrincipalPlane(features_per_epoch[-1])
        features_per_epoch = torch.stack([plane.points(feat) for feat in features_per_epoch])
    features_per_epoch = as_numpy(features_per_epoch)
    epochs = list(epochs) if epochs is not None else list(range(1, len(features_per_epoch) + 1))
    shown = 3 if width == 3 else 2  # a wider feature is drawn on its principal axes
    low = features_per_epoch.reshape(-1, shown).min(0)
    high = features_per_epoch.reshape(-1, shown).max(0)
    middle, half = (low + high) / 2, 0.55 * (high - low).max() + 1e-6  # the square axes filled
    panels = 2 if angular else 1
    frames = []
    for epoch, feat in zip(epochs, features_per_epoch):
        fig = panel_figure(panels)
        ax, *angular_ax = [panel_axes(fig, (1, panels, index + 1), shown == 3)
                           for index in range(panels)]
        if shown == 3:
            draw_features_3d(ax, feat, labels, holdout_classes=holdout_classes,
                             class_names=class_names)
            fit_cube(ax, low, high)  # one range for every frame
        else:
            draw_features(ax, feat, labels, holdout_classes=holdout_classes,
                          class_names=class_names)
            ax.set_aspect("equal", adjustable="box")
            ax.set_xlim(middle[0] - half, middle[0] + half)
            ax.set_ylim(middle[1] - half, middle[1] + half)
        ax.set_title(f"test features{shown_as(width)}, epoch {epoch}")
        for direction_ax in angular_ax:
            (draw_directions_3d if shown == 3 else draw_directions)(
                direction_ax, feat, labels, {}, holdout_classes, class_names)
            direction_ax.set_title(f"their directions, epoch {epoch}")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        frames.append(Image.open(buffer).convert("P", palette=Image.Palette.ADAPTIVE))
    gif = io.BytesIO()
    frames[0].save(gif, format="gif", save_all=True, append_images=frames[1:],
                   duration=int(seconds_per_frame * 1000), loop=0)
    atomic_write(path, gif.getvalue())
    return len(frames)


def display_available():
    return os.name == "nt" or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def show_batch(images, path, show=False):
    """Write a batch of `images` (N, 1, 28, 28, pixel values in 0-1) as a 16-wide image grid
    to `path`, as the article looks at its data (mnist_loader.show_data); open a window
    when `show` is asked and a display exists. Returns the path."""
    path = Path(path)
    show_data(images, lambda png: atomic_write(path, png), show and display_available())
    if show and not display_available():
        print(f"No display found; the batch grid is in {path}")
    return path
