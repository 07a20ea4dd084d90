"""The timing script of the re-ID parts on the small MNIST: a line per part; the
figures themselves are timings, not checked."""
import re
import sys

from conftest import REPO_DIR

sys.path.insert(0, str(REPO_DIR / "benchmarks"))

import reid_parts  # noqa: E402  (after the path is set)


def test_a_line_per_part_with_its_figure(mnist_dir, capsys):
    reid_parts.main(["--dataset_dir", str(mnist_dir), "--classes_per_batch", "2",
                     "--images_per_class", "4", "--wide", "16", "--steps", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5
    assert re.fullmatch(r"an epoch's batches of 300 images, no network: shuffle [\d.]+ s, "
                        r"PK 2 x 4 [\d.]+ s \(37 steps\)", lines[0])
    assert [re.sub(r"[\d.]+ ms", "T", line) for line in lines[1:3]] == [
        f"triplet loss, forward and backward, batch 8, {width}-D: T a step" for width in (2, 16)]
    assert [re.sub(r"[\d.]+ s$", "T", line) for line in lines[3:]] == [
        f"retrieval and re-ID figures of 100 test features, {width}-D: T" for width in (2, 16)]
