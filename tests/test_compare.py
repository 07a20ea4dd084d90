import itertools
import json
import shutil

import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from mnist_loader import TensorLoader

import compare
import train_mnist_original_center as trainer
from conftest import trainer_flags
from run_machinery.checkpoint_run import open_checkpoint
from run_machinery.errors import UserError
from run_machinery.evaluation import evaluate
from run_machinery.plots import panel_figure
from run_machinery.run_file import read_run_file


def test_two_runs_side_by_side(two_epoch_run, arcface_run, tmp_path, capsys):
    _, softmax_run = two_epoch_run
    results = compare.main([str(softmax_run), str(arcface_run), "--out", str(tmp_path / "c.png"),
                            "--markdown", str(tmp_path / "c.md")])
    assert ([(r["head"], r["epoch"], r["loss_weight"]) for r in results]
            == [("softmax", 2, 1.0), ("arcface", 2, 1.0)])
    with Image.open(tmp_path / "c.png") as image:
        assert image.size == (2 * 800, 700)  # a panel per run, as large as the epoch picture's
    table = (tmp_path / "c.md").read_text().splitlines()
    assert table[0] == ("| run | loss | dim | epoch | test accuracy | Precision@1 "
                        "| R-Precision | MAP@R | rank-1 | mAP | s/epoch |")
    assert len(table) == 4 and table[3].startswith(
        f"| {arcface_run.name} | arcface + 1 center | 2 | 2 | ")
    figures = [results[1][key] for key in ("map_at_r", "rank_1", "mean_average_precision")]
    assert (" | ".join(f"{figure:.4f}" for figure in figures) in table[3]
            and table[1] in capsys.readouterr().out)
    history = (arcface_run / "history.csv").read_text().splitlines()
    seconds = sorted(float(line.split(",")[-1]) for line in history[1:])
    assert (history[0].endswith(",seconds")
            and table[3].endswith(f"| {sum(seconds) / 2:.1f} |"))  # median of 2


def test_epoch_picks_the_checkpoint(two_epoch_run, arcface_run, tmp_path):
    _, softmax_run = two_epoch_run
    results = compare.main([str(softmax_run), str(arcface_run), "--epoch", "1", "--out",
                            str(tmp_path / "c.png")])
    assert [r["epoch"] for r in results] == [1, 1]
    first = float((arcface_run / "history.csv").read_text().splitlines()[1].split(",")[-1])
    assert results[1]["seconds_per_epoch"] == pytest.approx(first)
    with pytest.raises(SystemExit) as stop:
        compare.main([str(softmax_run), "--epoch", "3", "--out", str(tmp_path / "c.png")])
    assert "has no checkpoint of epoch 3" in stop.value.code


def test_unseen_map_at_r_is_a_column_when_digits_were_held_out(two_epoch_run, holdout_run,
                                                                tmp_path):
    _, softmax_run = two_epoch_run
    compare.main([str(softmax_run), str(holdout_run), "--out", str(tmp_path / "c.png"),
                  "--markdown", str(tmp_path / "c.md")])
    header, _, softmax_row, holdout_row = (tmp_path / "c.md").read_text().splitlines()
    assert (header.endswith("| MAP@R | rank-1 | mAP | unseen MAP@R | unseen rank-1 | unseen mAP "
                            "| s/epoch |")
            and softmax_row.split(" | ")[-4:-1] == ["-"] * 3)
    assert "-" not in holdout_row.split(" | ")[-4:-1]


def test_the_triplet_loss_alone_has_no_accuracy(two_epoch_run, mnist_dir, tmp_path):
    _, softmax_run = two_epoch_run
    trainer.main(trainer_flags(mnist_dir, tmp_path / "triplet", "--epochs", 1, "--softmax_weight",
                               0, "--loss_weight", 0, "--triplet_weight", 1,
                               "--classes_per_batch", 4, "--images_per_class", 8))
    results = compare.main([str(softmax_run), str(tmp_path / "triplet"), "--out",
                            str(tmp_path / "c.png"), "--markdown", str(tmp_path / "c.md")])
    assert results[0]["accuracy"] is not None and results[1]["accuracy"] is None
    row = (tmp_path / "c.md").read_text().splitlines()[3].split(" | ")
    assert row[1:5] == ["1 triplet", "2", "1", "-"]  # loss, dim, epoch, accuracy


@pytest.mark.parametrize("settings, description", [
    ({"loss_weight": 1.0}, "softmax + 1 center"),  # the article's, recorded before heads existed
    ({"head": "arcface", "loss_weight": 0.0}, "arcface"),
    ({"head": "softmax", "loss_weight": 0.0005, "triplet_weight": 1.0, "softmax_weight": 1.0},
     "softmax + 0.0005 center + 1 triplet"),
    ({"head": "softmax", "loss_weight": 0.0, "triplet_weight": 2.0, "softmax_weight": 0.0},
     "2 triplet"),
    ({"head": "cosface", "loss_weight": 0.0, "softmax_weight": 0.5}, "0.5 cosface"),
])
def test_the_loss_in_words(settings, description, tmp_path):
    # the settings as a run.json of the time records them, read as every command reads it
    (tmp_path / "run.json").write_text(json.dumps({"settings": {
        "out_dir": ".", "model_path_temp": None, "vis_img_path_temp": None, "epochs": 1,
        **settings}}))
    assert compare.loss_description(read_run_file(tmp_path)) == description


@pytest.mark.parametrize("case, message", [
    ("no_run", "is not a run's folder: it has no run.json"),
    ("other_test_set", "was tested on other images than"),
    ("other_dataset", "was trained on Fashion-MNIST"),
])
def test_bad_input_is_one_line(two_epoch_run, reference_run, fashion_run, tmp_path, case, message):
    _, softmax_run = two_epoch_run
    # The reference run tests on 16 images.
    other = {"no_run": tmp_path, "other_test_set": reference_run,
             "other_dataset": fashion_run}[case]
    with pytest.raises(SystemExit) as stop:
        compare.main([str(softmax_run), str(other), "--out", str(tmp_path / "c.png")])
    assert message in stop.value.code and "\n" not in stop.value.code


def test_runs_tested_on_other_images_compare_on_the_first_n_given(two_epoch_run, reference_run,
                                                                  tmp_path):
    _, softmax_run = two_epoch_run
    # The reference run tested on its first 16 test images, the other on all 100.
    results = compare.main([str(softmax_run), str(reference_run), "--max_test_samples", "16",
                            "--out", str(tmp_path / "c.png")])
    assert [metrics["num_test_images"] for metrics in results] == [16, 16]


def test_more_than_three_runs_wrap_onto_rows(two_epoch_run, arcface_run, tmp_path):
    _, softmax_run = two_epoch_run
    runs = [str(softmax_run), str(arcface_run)] * 2
    assert len(compare.main(runs + ["--out", str(tmp_path / "c.png")])) == 4
    with Image.open(tmp_path / "c.png") as image:
        # three panels a row; the last two places stay empty
        assert image.size == (3 * 800, 2 * 700)


def test_help_describes_the_figure_and_the_table(capsys):
    with pytest.raises(SystemExit):
        compare.build_parser().parse_args(["--help"])
    assert ("per run, and a Markdown table of their figures."
            in " ".join(capsys.readouterr().out.split()))


def test_a_folder_run_compares_with_itself_and_not_with_mnist(folder_run, two_epoch_run,
                                                             tmp_path, capsys):
    results = compare.main([str(folder_run), str(folder_run), "--out", str(tmp_path / "c.png"),
                            "--device", "cpu"])
    assert [metrics["dataset"] for metrics in results] == ["folder", "folder"]
    assert results[0]["map_at_r"] == results[1]["map_at_r"]
    assert "unseen MAP@R" in capsys.readouterr().out
    _, mnist_run = two_epoch_run
    with pytest.raises(SystemExit) as stop:
        compare.main([str(folder_run), str(mnist_run), "--out", str(tmp_path / "d.png")])
    assert f"{mnist_run} was trained on MNIST, {folder_run} on the image folder" in stop.value.code


def test_the_same_test_split_means_the_same_pixels_labels_and_names():
    images = torch.rand(6, 1, 28, 28).mul(255).round().div(255)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    loader = TensorLoader(images, labels, 4, class_names=("a", "b", "c"))
    # the same pixels, normalised otherwise
    renormalised = TensorLoader((images - 0.2) / 0.3, labels, 4, mean=0.2, std=0.3,
                                class_names=("a", "b", "c"))
    assert compare.same_test_split(loader, renormalised)
    for other in (TensorLoader(images.flip(0), labels, 4, class_names=("a", "b", "c")),
                  TensorLoader(images, labels.flip(0), 4, class_names=("a", "b", "c")),
                  TensorLoader(images, labels, 4, class_names=("a", "b", "d"))):
        assert not compare.same_test_split(loader, other)


@pytest.mark.parametrize("rows, message", [
    ("1,2.5\n2,abc\n", "line 3: seconds 'abc' is not a number"),
    ("1,2.5\nx,3.0\n", "line 3: epoch 'x' is not a whole number"),
    ("1,2.5\n2\n", "line 3: seconds is missing"),
])
def test_a_damaged_history_names_its_line(tmp_path, rows, message):
    (tmp_path / "history.csv").write_text("epoch,seconds\n" + rows)
    with pytest.raises(UserError) as error:
        compare.median_epoch_seconds(tmp_path / "history.csv", 2)
    assert str(error.value) == f"{tmp_path / 'history.csv'}, {message}"


def test_compare_stops_in_one_line_on_a_damaged_history(holdout_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(holdout_run, copy)
    run = json.loads((copy / "run.json").read_text())
    run["settings"]["out_dir"] = str(copy)  # the copy's own files
    (copy / "run.json").write_text(json.dumps(run))
    lines = (copy / "history.csv").read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ",1.2.3"
    (copy / "history.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemExit) as stop:
        compare.main([str(copy), "--out", str(tmp_path / "c.png")])
    assert stop.value.code == (f"error: {copy / 'history.csv'}, line 3: seconds '1.2.3' is not "
                               "a number")


def test_a_moved_run_is_read_from_where_it_is_now(mnist_dir, tmp_path):
    slot, moved = tmp_path / "slot", tmp_path / "moved"
    trainer.main(trainer_flags(mnist_dir, slot, "--epochs", 2, "--max_train_samples", 64))
    slot.rename(moved)
    trainer.main(trainer_flags(mnist_dir, slot, "--epochs", 1, "--max_train_samples", 64,
                               "--seed", "7"))
    [figures] = compare.main([str(moved), "--out", str(tmp_path / "c.png")])
    assert figures["epoch"] == 2  # moved's own last checkpoint, not slot's epoch 1


def test_runs_are_named_by_as_much_of_their_path_as_tells_them_apart(tmp_path):
    first, second, other = tmp_path / "x" / "run", tmp_path / "y" / "run", tmp_path / "y" / "b"
    assert compare.run_names([first, second, other, first]) == [
        str(first.relative_to(tmp_path)), str(second.relative_to(tmp_path)), "b",
        str(first.relative_to(tmp_path))]  # a folder given twice keeps its name


def test_the_panels_are_titled_by_run_and_recipe_equal_and_readable(two_epoch_run, mnist_dir,
                                                                    tmp_path):
    _, softmax_run = two_epoch_run
    wide = tmp_path / "y" / softmax_run.name  # another run in a folder of the same name
    trainer.main(trainer_flags(mnist_dir, wide, "--epochs", 1, "--feat_dim", 3,
                               "--max_train_samples", 64))
    names = compare.run_names([softmax_run, wide])
    assert names[0] != names[1] and names[1].endswith(f"y/{softmax_run.name}")
    fig = panel_figure(2)
    axes = []
    for index, (name, run, epoch) in enumerate(zip(names, (softmax_run, wide), (2, 1))):
        checkpoint = open_checkpoint(run / "model" / f"epoch_{epoch:03d}.pth")
        loader = checkpoint.test_split(torch.device("cpu"))
        metrics, features, _ = evaluate(checkpoint.model, checkpoint.head, loader,
                                        checkpoint.classes, [])
        metrics.update(loss="softmax + 1 center", feat_dim=features.shape[1], epoch=epoch)
        axes.append(compare.draw_panel(fig, (1, 2, index + 1), name, metrics, features,
                                       loader.labels, checkpoint))
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    assert [ax.get_title().split("\n")[0] for ax in axes] == [
        f"{names[0]}: softmax + 1 center, 2-D, epoch 2",
        f"{names[1]}: softmax + 1 center, 3-D, epoch 1"]
    assert axes[0].get_images() and axes[1].name == "3d"  # the regions at 2-D only
    # the 2-D panel with its regions as large as the 3-D one
    assert axes[0].get_position().size == pytest.approx(axes[1].get_position().size)
    for ax in axes:
        for axis in (ax.xaxis, ax.yaxis) + ((ax.zaxis,) if ax.name == "3d" else ()):
            # the labels drawn: a 3-D axis keeps stale labels of ticks beyond its limits
            low, high = sorted(axis.get_view_interval())
            boxes = [label.get_window_extent(renderer)
                     for location, label in zip(axis.get_majorticklocs(), axis.get_ticklabels())
                     if low <= location <= high and label.get_visible() and label.get_text()]
            assert len(boxes) >= 2
            assert not any(first.overlaps(second)
                           for first, second in itertools.combinations(boxes, 2))
