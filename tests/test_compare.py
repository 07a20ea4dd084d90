import pytest
from PIL import Image

import compare


def test_two_runs_side_by_side(two_epoch_run, arcface_run, tmp_path, capsys):
    _, softmax_run = two_epoch_run
    results = compare.main([str(softmax_run), str(arcface_run), "--out", str(tmp_path / "c.png"),
                            "--markdown", str(tmp_path / "c.md")])
    assert ([(r["head"], r["epoch"], r["loss_weight"]) for r in results]
            == [("softmax", 2, 1.0), ("arcface", 2, 1.0)])
    with Image.open(tmp_path / "c.png") as image:
        assert image.size == (2 * 512, 464)  # a panel per run
    table = (tmp_path / "c.md").read_text().splitlines()
    assert table[0] == ("| run | head | loss weight | epoch | test accuracy | Precision@1 "
                        "| R-Precision | MAP@R | rank-1 | mAP | s/epoch |")
    assert len(table) == 4 and table[3].startswith(f"| {arcface_run.name} | arcface | 1 | 2 | ")
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
    assert (header.endswith("| MAP@R | rank-1 | mAP | unseen MAP@R | s/epoch |")
            and softmax_row.split(" | ")[-2] == "-")
    assert holdout_row.split(" | ")[-2] != "-"


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


def test_more_than_three_runs_wrap_onto_rows(two_epoch_run, arcface_run, tmp_path):
    _, softmax_run = two_epoch_run
    runs = [str(softmax_run), str(arcface_run)] * 2
    assert len(compare.main(runs + ["--out", str(tmp_path / "c.png")])) == 4
    with Image.open(tmp_path / "c.png") as image:
        # three panels a row; the last two places stay empty
        assert image.size == (3 * 512, 2 * 464)


def test_help_describes_the_figure_and_the_table(capsys):
    with pytest.raises(SystemExit):
        compare.parse_args(["--help"])
    assert ("per run, and a Markdown table of their figures."
            in " ".join(capsys.readouterr().out.split()))
