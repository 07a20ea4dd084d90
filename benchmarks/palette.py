"""Check the class colours (run_machinery/plots.py's CLASS_COLORS) against the article's:
how far apart every two of them look, for normal vision and for the three colour-vision
deficiencies, simulated; with --search, make the palette again.

    python3 -m pip install colorspacious   # the simulation and the colour space
    python3 benchmarks/palette.py
    python3 benchmarks/palette.py --search

A distance is CAM02-UCS's Delta E (Luo, Cui and Li 2006; about 1 is a just noticeable
difference between large patches; small dots need much more). A colour-blind reader's view
is simulated by colorspacious's model of Machado, Oliveira and Fernandes (2009) at severity
100: deuteranopia, protanopia and tritanopia. For normal vision the distance in hue and
colourfulness alone (a'b', lightness left out) is printed too: two colours that differ in
lightness only (the article's 2 and 8, 3 and 9, 1 and 7) read as one colour in small dots.

The search: among the colours of a 16-level sRGB grid (0x00, 0x11, ... 0xff in each channel)
of lightness J' from 35 to 78 (each shows as a small dot on white, and stays apart from the
black centres), ten whose smallest distance, over every vision and the a'b' distance for
normal vision, is largest: from a farthest-point start, each colour in turn is swapped for
the one that raises that smallest distance most, until none does; the best of 40 seeded
starts. The ten more (for datasets of 11 to 20 classes) are searched the same way, the
first ten kept.
"""
import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
from colorspacious import cspace_convert
from matplotlib.colors import to_hex, to_rgb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from article_pipeline import COLORS as ARTICLE_COLORS  # noqa: E402  (after the path is set)
from run_machinery.plots import CLASS_COLORS, TEN  # noqa: E402

VISIONS = ("normal", "deuteranopia", "protanopia", "tritanopia")
# colorspacious names the dichromacies by their anomalous trichromacy at severity 100
MODELS = {"deuteranopia": "deuteranomaly", "protanopia": "protanomaly",
          "tritanopia": "tritanomaly"}
LIGHTNESS = (35, 78)  # J' of the candidates
GRID_LEVELS, STARTS, SEED = 16, 40, 0


def seen(colors, vision):
    """`colors` (hex strings, or sRGB rows in 0-1) as a reader of `vision` sees them, in
    sRGB (0-1, clipped)."""
    rgb = np.array([to_rgb(color) for color in colors]) if isinstance(colors[0], str) else colors
    if vision == "normal":
        return np.asarray(rgb, dtype=float)
    model = {"name": "sRGB1+CVD", "cvd_type": MODELS[vision], "severity": 100}
    return np.clip(cspace_convert(rgb, model, "sRGB1"), 0, 1)


def uniform(colors, vision="normal"):
    """The CAM02-UCS coordinates (J', a', b') of `colors` as a reader of `vision` sees them."""
    return cspace_convert(seen(colors, vision), "sRGB1", "CAM02-UCS")


def coordinates(colors):
    """(5, N, 3): the colours in CAM02-UCS for each vision, then for normal vision with the
    lightness left out, so that one distance measures all five."""
    normal = uniform(colors)
    return np.stack([normal] + [uniform(colors, vision) for vision in VISIONS[1:]]
                    + [normal * [0, 1, 1]])


def closest_pair(points):
    """The smallest distance between two of `points` (N, 3), and that pair's indices."""
    first, second = np.triu_indices(len(points), 1)
    distances = np.linalg.norm(points[first] - points[second], axis=1)
    nearest = int(distances.argmin())
    return float(distances[nearest]), int(first[nearest]), int(second[nearest])


def report(name, colors):
    """The lines of figures of a palette: for each vision its closest pair, and for normal
    vision the closest in hue alone and the range of lightness."""
    points = coordinates(colors)
    lines = []
    for vision, seen_points in zip(VISIONS, points):
        distance, first, second = closest_pair(seen_points)
        lines.append(f"{name}, {vision}: smallest distance {distance:.1f} "
                     f"(classes {first} and {second})")
    distance, first, second = closest_pair(points[-1])
    lightness = points[0][:, 0]
    lines.append(f"{name}, normal, hue and colourfulness alone: smallest distance "
                 f"{distance:.1f} (classes {first} and {second}); lightness J' "
                 f"{lightness.min():.0f} to {lightness.max():.0f}")
    return lines


def smallest(points):
    """The smallest distance between two of `points` (5, N, 3) in any of the five views."""
    first, second = np.triu_indices(points.shape[1], 1)
    return float(np.linalg.norm(points[:, first] - points[:, second], axis=-1).min())


def search(count, kept=()):
    """`count` colours (hex), `kept` (hex) first, the others found by the module's search."""
    levels = np.linspace(0, 1, GRID_LEVELS)
    grid = np.array(list(itertools.product(levels, levels, levels)))
    lightness = uniform(grid)[:, 0]
    grid = grid[(lightness >= LIGHTNESS[0]) & (lightness <= LIGHTNESS[1])]
    candidates = coordinates(grid)
    fixed = coordinates(list(kept)) if kept else np.zeros((5, 0, 3))
    free = count - len(kept)
    generator = np.random.default_rng(SEED)

    def distance_to(members):  # each candidate's smallest distance to `members` (5, M, 3)
        return np.linalg.norm(candidates[:, :, None] - members[:, None], axis=-1).min((0, 2))

    best_score, best = -1.0, None
    for _ in range(STARTS):
        chosen = [int(generator.integers(len(grid)))]
        while len(chosen) < free:
            members = np.concatenate([fixed, candidates[:, chosen]], axis=1)
            chosen.append(int(distance_to(members).argmax()))
        score = smallest(np.concatenate([fixed, candidates[:, chosen]], axis=1))
        improved = True
        while improved:
            improved = False
            for place in range(free):
                others = np.concatenate([fixed, candidates[:, chosen[:place] + chosen[place + 1:]]],
                                        axis=1)
                scores = np.minimum(distance_to(others), smallest(others))
                swap = int(scores.argmax())
                if scores[swap] > score + 1e-9:
                    chosen[place], score, improved = swap, float(scores[swap]), True
        if score > best_score:
            best_score, best = score, chosen
    return list(kept) + [to_hex(color) for color in grid[best]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--search", action="store_true",
                        help="search the palette again and print it, with its figures")
    args = parser.parse_args(argv)
    if args.search:
        ten = search(TEN)
        colors = search(2 * TEN, ten)
        print("searched:", ", ".join(f'"{color}"' for color in colors))
        for line in report("searched ten", ten) + report("searched twenty", colors):
            print(line)
        return colors
    for line in (report("project", CLASS_COLORS[:TEN]) + report("article", ARTICLE_COLORS)
                 + report("project, all twenty", CLASS_COLORS)):
        print(line)
    return CLASS_COLORS


if __name__ == "__main__":
    main()
