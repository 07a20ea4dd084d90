"""The check of the class colours (benchmarks/palette.py): every two of the ten stay apart
for normal vision and for simulated deuteranopia, protanopia and tritanopia, further than
the article's colours do, and the search makes them again."""
import sys

import numpy as np
import pytest

from conftest import REPO_DIR
from run_machinery.plots import CLASS_COLORS, TEN

pytest.importorskip("colorspacious", reason="colorspacious is not installed (requirements.txt)")
sys.path.insert(0, str(REPO_DIR / "benchmarks"))

import palette  # noqa: E402  (after the path is set)

# The least distance (CAM02-UCS Delta E) between two of the ten, in each view: the measured
# figures (docs/evaluation.md#the-class-colours) rounded down.
THRESHOLDS = {"normal": 25, "deuteranopia": 17, "protanopia": 17, "tritanopia": 17,
              "hue alone": 18}


def test_every_two_of_the_ten_stay_apart_in_every_vision_more_than_the_articles():
    ours, article = palette.coordinates(CLASS_COLORS[:TEN]), palette.coordinates(
        palette.ARTICLE_COLORS)
    for view, own, theirs in zip(THRESHOLDS, ours, article):
        distance = palette.closest_pair(own)[0]
        assert distance >= THRESHOLDS[view], view
        assert distance > palette.closest_pair(theirs)[0] + 5, view
    lightness = ours[0][:, 0]  # every colour a dot on white, none near the black centres
    assert lightness.min() >= palette.LIGHTNESS[0] and lightness.max() <= palette.LIGHTNESS[1]


def test_the_simulation_confuses_what_each_deficiency_confuses():
    # a grey looks grey to everyone
    for vision in palette.VISIONS:
        assert np.allclose(palette.seen(["#808080"], vision), 0x80 / 255, atol=0.01)

    def distance(first, second, vision):
        return palette.closest_pair(palette.uniform([first, second], vision))[0]

    # the article's red 0 and olive 7: apart for normal vision, alike without green cones
    assert distance("#ff0000", "#999900", "normal") > 4 * distance("#ff0000", "#999900",
                                                                  "deuteranopia")
    # the article's green 8 and teal 9: apart for normal vision, alike without blue cones
    assert distance("#009900", "#009999", "normal") > 4 * distance("#009900", "#009999",
                                                                  "tritanopia")


def test_the_figures_are_printed_a_line_each(capsys):
    assert palette.main([]) == CLASS_COLORS
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 * 5
    assert lines[1].startswith("project, deuteranopia: smallest distance ")
    assert lines[6].startswith("article, deuteranopia: smallest distance 2.3 (classes 0 and 7)")


def test_the_search_makes_the_palette_again():
    assert palette.search(TEN) == list(CLASS_COLORS[:TEN])
