"""The first-steps probe of the heads on the small synthetic MNIST; nothing here is timed."""
import re
import subprocess
import sys

from conftest import REPO_DIR

PROBE = REPO_DIR / "benchmarks" / "head_first_steps.py"


def probe(mnist_dir, *flags):
    result = subprocess.run([sys.executable, str(PROBE), "--dataset_dir", str(mnist_dir), "--images", "256", *flags],
                            capture_output=True, text=True, timeout=120, cwd=REPO_DIR)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_a_line_per_head_with_its_figures(mnist_dir):
    header, *lines = probe(mnist_dir)
    assert header.startswith("2 steps of 128 images") and header.endswith("norm floor 1")
    assert [line.split()[0] for line in lines] == ["softmax", "normface", "cosface", "arcface", "sphereface"]
    for line in lines:
        norms = re.search(r"feature norm: first ([\d.e+-]+), max ([\d.e+-]+), last", line)
        assert 0 < float(norms[1]) <= float(norms[2])


def test_without_the_floor(mnist_dir):
    header, *lines = probe(mnist_dir, "--heads", "arcface", "--no_norm_floor")
    assert header.endswith("norm floor 1e-12") and len(lines) == 1 and lines[0].startswith("arcface ")
