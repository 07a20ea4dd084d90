"""The first-steps probe of the heads on the small synthetic MNIST; nothing here is timed."""
import re
import sys

import pytest

from conftest import REPO_DIR

sys.path.insert(0, str(REPO_DIR / "benchmarks"))

import head_first_steps  # noqa: E402  (after the path is set)


def probe(mnist_dir, capsys, *flags):
    head_first_steps.main(["--dataset_dir", str(mnist_dir), "--images", "256", *flags])
    return capsys.readouterr().out.splitlines()


def test_a_line_per_head_with_its_figures(mnist_dir, capsys):
    header, *lines = probe(mnist_dir, capsys)
    assert (header.startswith("2 steps of 128 images")
            and header.endswith("norm floor 1, Center Loss weight 1"))
    assert ([line.split()[0] for line in lines]
            == ["softmax", "normface", "cosface", "arcface", "sphereface"])
    for line in lines:
        norms = re.search(r"feature norm: first ([\d.e+-]+), max ([\d.e+-]+), last", line)
        assert 0 < float(norms[1]) <= float(norms[2])
        assert 0 <= float(re.search(r"closest class weights ([\d.]+) deg", line)[1]) <= 180


def test_margin_and_loss_weight(mnist_dir, capsys):
    header, *lines = probe(mnist_dir, capsys, "--heads", "normface", "cosface", "--margin", "0.05",
                           "--loss_weight", "0")
    assert header.endswith("Center Loss weight 0")
    # NormFace takes no margin
    assert not lines[0].endswith(")") and lines[1].endswith("deg (m = 0.05)")


def test_a_margin_a_listed_head_cannot_take_is_one_line_before_training(mnist_dir, capsys):
    with pytest.raises(SystemExit) as stop:
        probe(mnist_dir, capsys, "--margin", "0.1")  # every head, SphereFace's margin an integer
    assert stop.value.code == ("error: --margin of sphereface multiplies the angle and must be an "
                               "integer from 1 to 10, got 0.1")
    assert capsys.readouterr().out == ""


def test_without_the_floor(mnist_dir, capsys):
    header, *lines = probe(mnist_dir, capsys, "--heads", "arcface", "--no_norm_floor")
    assert "norm floor 1e-12," in header and len(lines) == 1 and lines[0].startswith("arcface ")


def test_help_says_what_the_figures_are_behind(capsys):
    with pytest.raises(SystemExit):
        head_first_steps.main(["--help"])
    assert "the figures behind margin_heads.NORM_FLOOR (see docs/margin-heads.md)." in \
        " ".join(capsys.readouterr().out.split())
