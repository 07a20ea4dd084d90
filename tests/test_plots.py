import itertools

import matplotlib.colors
import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from mnist_loader import load_dataset

from run_machinery.plots import (
    CLASS_COLORS,
    PrincipalPlane,
    class_colors,
    draw_decision_regions,
    draw_directions,
    draw_features,
    epoch_figure,
    panel_axes,
    panel_figure,
    plot_curves,
    show_batch,
    spread_angles,
    write_feature_gif,
)


def drawn(fig):
    """`fig` drawn once, as when it is saved: its limits, positions and texts settled."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def overlapping(boxes):
    """The pairs of the display boxes (Bbox) that overlap."""
    return [(first, second) for first, second in itertools.combinations(range(len(boxes)), 2)
            if boxes[first].overlaps(boxes[second])]


def tick_label_boxes(ax, renderer):
    """The boxes of the tick labels each axis of `ax` shows, axis by axis."""
    axes = (ax.xaxis, ax.yaxis) + ((ax.zaxis,) if ax.name == "3d" else ())
    return [[label.get_window_extent(renderer) for label in axis.get_ticklabels()
             if label.get_visible() and label.get_text()] for axis in axes]


def test_axes_hold_every_point_and_centre():
    feat = torch.tensor([[0.0, 0.0], [250.0, -3.0], [-7.0, 90.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 9, 3])
    centers = torch.tensor([[-400.0, 2.0]] + [[0.0, 0.0]] * 9)
    ax = Figure().add_subplot()
    draw_features(ax, feat, labels, centers)
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    assert x0 <= -400 and x1 >= 250 and y0 <= -3 and y1 >= 90


def test_unseen_digits_are_crosses_in_the_legend():
    ax = Figure().add_subplot()
    draw_features(ax, torch.randn(20, 2), torch.arange(20) % 10, holdout_classes=[8, 9])
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "8 (unseen)" in labels and "9 (unseen)" in labels and "7" in labels


def test_the_legend_names_the_classes():
    ax = Figure().add_subplot()
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
             "Bag", "Ankle boot"]
    draw_features(ax, torch.randn(20, 2), torch.arange(20) % 10, holdout_classes=[6],
                  class_names=names)
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels[:3] == ["T-shirt/top", "Trouser", "Pullover"] and "Shirt (unseen)" in labels


def test_decision_regions_are_wedges_of_the_classifier():
    ax = Figure().add_subplot()
    ax.plot([-1, 1], [-1, 1])
    weight = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # class 0 right of the y axis, class 1 left
    draw_decision_regions(ax, weight, [3, 5], resolution=20)
    image = ax.get_images()[0].get_array()
    assert (np.asarray(image[:, -1]) == 0).all() and (np.asarray(image[:, 0]) == 1).all()
    assert ax.get_images()[0].get_cmap().colors == [CLASS_COLORS[3], CLASS_COLORS[5]]


def test_decision_regions_keep_the_axes_as_large_as_the_others():
    fig = panel_figure(2)
    plain, shaded = panel_axes(fig, (1, 2, 1)), panel_axes(fig, (1, 2, 2))
    for ax in (plain, shaded):
        draw_features(ax, torch.tensor([[0.0, -1.0], [30.0, 1.0]]), torch.tensor([0, 1]))
    draw_decision_regions(shaded, torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), [0, 1], resolution=20)
    drawn(fig)
    assert plain.get_position().size == pytest.approx(shaded.get_position().size)
    # the shading covers the visible plane: the limits did not move when it was drawn
    extent = shaded.get_images()[0].get_extent()
    assert extent == pytest.approx([*shaded.get_xlim(), *shaded.get_ylim()])


def test_directions_put_features_on_the_unit_circle_with_the_class_weights():
    ax = Figure().add_subplot()
    feat = torch.tensor([[30.0, 40.0], [-0.3, 0.0], [0.0, -7.0]])
    draw_directions(ax, feat, torch.tensor([0, 1, 2]),
                    {0: torch.tensor([0.0, 5.0]), 1: torch.tensor([-2.0, 0.0])})
    points = np.concatenate([line.get_xydata() for line in ax.get_lines()
                             if line.get_linestyle() == "None"])
    assert np.allclose(np.linalg.norm(points, axis=1), 1)  # every feature scaled to norm 1
    weights = [line for line in ax.get_lines() if line.get_linewidth() == 2]
    assert [tuple(np.round(line.get_xydata()[1], 3)) for line in weights] == [(0, 1.25), (-1.25, 0)]
    assert [line.get_color() for line in weights] == [CLASS_COLORS[0], CLASS_COLORS[1]]
    assert ax.get_xlim() == (-1.5, 1.5) and ax.get_ylim() == (-1.5, 1.5)


@pytest.mark.parametrize("names, moved", [
    (None, 10),  # digits: moved a few degrees at most
    (["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
      "Ankle boot"], 40),  # long names, side by side above the circle: moved further
])
def test_the_names_of_close_directions_do_not_overlap(names, moved):
    # the classes 4, 6, 8 and 9 three degrees apart, 2 and 3 near them
    degrees = {0: 0, 1: 40, 2: 75, 3: 100, 4: 84, 5: 150, 6: 87, 7: 200, 8: 90, 9: 93}
    directions = {label: torch.tensor([np.cos(np.radians(angle)), np.sin(np.radians(angle))])
                  for label, angle in degrees.items()}
    fig = panel_figure(1)
    ax = panel_axes(fig, (1, 1, 1))
    draw_directions(ax, torch.randn(50, 2), torch.arange(50) % 10, directions, class_names=names)
    renderer = drawn(fig)
    labels = ax.texts
    assert [text.get_text() for text in labels] == (names or [str(label) for label in range(10)])
    assert overlapping([text.get_window_extent(renderer) for text in labels]) == []
    for text, angle in zip(labels, degrees.values()):  # each near its direction still
        x, y = text.get_position()
        assert abs((np.degrees(np.arctan2(y, x)) - angle + 180) % 360 - 180) < moved


def test_spread_angles_keep_their_order_and_the_gap():
    angles = np.radians([80, 85, 90, 95, 200, -170, 10])
    spread = spread_angles(angles, np.radians(16))
    order = np.argsort(angles)
    gaps = np.diff(spread[order], append=spread[order][0] + 2 * np.pi) % (2 * np.pi)
    assert gaps.min() >= np.radians(16) - 1e-9
    # a crowd spreads about its middle; one alone stays where it is
    assert np.degrees(spread[:4].mean()) == pytest.approx(87.5)
    assert np.degrees(spread[6]) == pytest.approx(10)
    assert np.degrees(spread[4:6].mean()) % 360 == pytest.approx(195)
    # no room for the gap: evenly spaced
    crowded = spread_angles(np.zeros(30), np.radians(16))
    assert np.diff(np.sort(crowded)) == pytest.approx(np.full(29, 2 * np.pi / 30))


def test_the_epoch_pictures_panels_are_equal_and_their_tick_labels_apart():
    feat = torch.randn(100, 2) * torch.tensor([1.0, 300.0])  # a tall narrow cloud
    labels = torch.arange(100) % 10
    fig = epoch_figure(1, feat, labels, torch.zeros(10, 2), feat, labels, (),
                       {label: torch.randn(2) for label in range(10)})
    renderer = drawn(fig)
    assert len({tuple(np.round(ax.get_position().size, 6)) for ax in fig.axes}) == 1
    for ax in fig.axes:
        for boxes in tick_label_boxes(ax, renderer):
            assert len(boxes) >= 2 and overlapping(boxes) == []


def test_curves_plot(tmp_path):
    rows = [{"epoch": e, "train_loss": 1 / e, "test_loss": 1.1 / e, "train_center_loss": 0.1 / e,
             "test_center_loss": 0.1 / e, "train_acc": 0.5, "test_acc": 0.4, "map_at_r": 0.3}
            for e in (1, 2, 3)]
    plot_curves(rows, tmp_path / "curves.png")
    with Image.open(tmp_path / "curves.png") as image:
        assert image.size == (1100, 450)


def test_feature_gif_has_a_frame_per_epoch_in_panels_of_the_epoch_picture(tmp_path):
    # a narrow cloud, growing
    features = (torch.randn(3, 30, 2) * torch.tensor([0.1, 1.0])
                * torch.tensor([1.0, 10.0, 100.0]).view(3, 1, 1))
    labels = torch.arange(30) % 10
    frames = write_feature_gif(features, labels, tmp_path / "f.gif", epochs=[4, 5, 6])
    # the epoch picture: the training and the test features, with the directions for an
    # angular head
    epoch_png = tmp_path / "epoch.png"
    epoch_figure(6, features[-1], labels, None, features[-1], labels).savefig(epoch_png)
    with Image.open(epoch_png) as picture:
        panel = (picture.width // 2, picture.height)
    with Image.open(tmp_path / "f.gif") as gif:
        assert frames == gif.n_frames == 3 and gif.size == panel
        frame = np.asarray(gif.convert("L"))
    # square axes across most of the frame, however narrow the cloud (the axes shrunk to
    # the cloud's shape spanned a fifth of the frame)
    assert (frame < 128).any(axis=0).mean() > 0.6
    write_feature_gif(features, labels, tmp_path / "angular.gif", angular=True)
    with Image.open(tmp_path / "angular.gif") as gif:
        # the features and their directions
        assert gif.n_frames == 3 and gif.size == (2 * panel[0], panel[1])


def test_ranking_figure_rows_and_frames():
    from run_machinery.plots import ranking_figure
    labels = torch.tensor([0, 0, 1, 1, 2])
    queries, neighbours = torch.tensor([0, 2]), torch.tensor([[1, 2], [4, 3]])
    fig = ranking_figure(torch.rand(5, 28, 28), labels, queries, neighbours, ["zero", "one", "two"])
    axes = fig.get_axes()
    assert len(axes) == 2 * (1 + 2)  # a row per query: the query and its two neighbours
    frames = [ax.spines["top"].get_edgecolor() for ax in axes]
    blue, green, red = (matplotlib.colors.to_rgba(c) for c in ("tab:blue", "tab:green", "tab:red"))
    assert frames == [blue, green, red, blue, red, green]
    assert [ax.get_title() for ax in axes] == ["zero", "zero", "one", "one", "two", "one"]


def test_show_batch_writes_a_16_wide_grid(mnist_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    train_loader = load_dataset(mnist_dir, 32)[0]
    images, _ = next(iter(train_loader))
    path = show_batch(train_loader.pixels(images), tmp_path / "grid.png", show=True)
    assert "No display" in capsys.readouterr().out
    width, height = Image.open(path).size
    # make_grid: 16 tiles of 28 px plus 2 px padding around each; 32 images -> 2 rows.
    assert (width, height) == (2 + 16 * 30, 2 + 2 * 30)


@pytest.mark.parametrize("width", [3, 8])
def test_wider_features_are_drawn_in_3d_or_on_their_principal_axes(width, tmp_path):
    feat, labels = torch.randn(60, width), torch.arange(60) % 10
    centers = torch.randn(10, width) * 50
    directions = {label: torch.randn(width) for label in range(10)}
    fig = epoch_figure(5, feat, labels, centers, feat, labels, [9], directions)
    assert len(fig.axes) == 3
    train_ax = fig.axes[0]
    if width == 3:
        assert train_ax.name == "3d"
        # The cube holds every point and every centre, however far.
        points = torch.cat([feat, centers])
        for limits, values in zip((train_ax.get_xlim(), train_ax.get_ylim(), train_ax.get_zlim()),
                                  points.T):
            assert limits[0] <= values.min() and values.max() <= limits[1]
        renderer = drawn(fig)
        for boxes in tick_label_boxes(train_ax, renderer):  # the cube's short edges
            assert len(boxes) >= 2 and overlapping(boxes) == []
    else:
        assert train_ax.name == "rectilinear" and "principal axes" in train_ax.get_title()
        plane = PrincipalPlane(feat)
        # The projection keeps the spread of the two widest directions.
        spread = torch.linalg.svdvals(feat - feat.mean(0))[:2]
        assert torch.allclose(plane.points(feat).std(0, unbiased=False) * len(feat) ** 0.5,
                              spread, rtol=1e-4)
    frames = write_feature_gif(torch.stack([feat, feat * 2]), labels, tmp_path / "f.gif", [9],
                               angular=True)
    assert frames == 2


def test_more_than_ten_classes_each_get_a_colour_of_their_own():
    names = [f"class {label}" for label in range(13)]
    ax = Figure().add_subplot()
    draw_features(ax, torch.randn(26, 2), torch.arange(26) % 13, class_names=names)
    legend = ax.get_legend()
    assert [text.get_text() for text in legend.get_texts()] == names
    colours = [matplotlib.colors.to_hex(handle.get_color()) for handle in legend.legend_handles]
    assert len(set(colours)) == 13 and colours == list(class_colors(names))
    assert class_colors(names[:10]) == class_colors() == CLASS_COLORS[:10]
    # without names, the labels tell how many classes there are
    assert class_colors(labels=torch.tensor([0, 12])) == class_colors(names) == CLASS_COLORS[:13]
    many = class_colors(labels=torch.tensor([30]))  # more than the palette: along turbo
    assert len(set(many)) == 31 and not set(many) & set(CLASS_COLORS)
    ax = Figure().add_subplot()
    ax.plot([-1, 1], [-1, 1])
    draw_decision_regions(ax, torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), [11, 12], resolution=20,
                          class_names=names)
    assert ax.get_images()[0].get_cmap().colors == list(class_colors(names)[11:])


def test_a_ranking_figure_draws_queries_without_neighbours():
    from run_machinery.plots import ranking_figure
    fig = ranking_figure(torch.rand(1, 28, 28), torch.tensor([0]), torch.tensor([0]),
                         torch.zeros(1, 0, dtype=torch.long), ["zero"])
    assert [ax.get_title() for ax in fig.get_axes()] == ["zero"]  # the query alone


def test_the_verification_figure_draws_the_roc_on_log_far_and_both_histograms():
    from run_machinery.plots import PAIR_COLORS, verification_figure
    far, tar = np.array([0, 1e-4, 1e-2, 1]), np.array([0, 0.5, 0.9, 1])
    edges = np.linspace(0, 4, 5)
    fig = verification_figure(far, tar, edges, np.array([0.7, 0.3, 0, 0]),
                              np.array([0, 0.1, 0.4, 0.5]), [(1e-2, 0.9, "at FAR 0.01")], 1.5,
                              "threshold", "title")
    roc_ax, histogram_ax = fig.get_axes()
    assert roc_ax.get_xscale() == "log" and histogram_ax.get_yscale() == "log"
    assert list(roc_ax.get_lines()[0].get_xdata()) == [1e-4, 1e-2, 1]  # FAR 0 has no log
    stairs = [patch for patch in histogram_ax.patches]
    assert [matplotlib.colors.to_hex(patch.get_edgecolor()) for patch in stairs] == [
        PAIR_COLORS["genuine"], PAIR_COLORS["impostor"]]
    assert list(histogram_ax.get_lines()[0].get_xdata()) == [1.5, 1.5]  # the threshold
    assert [text.get_text() for text in histogram_ax.get_legend().get_texts()] == [
        "genuine pairs", "impostor pairs", "threshold"]
    assert (fig.get_size_inches() * fig.dpi).tolist() == [1600, 700]
