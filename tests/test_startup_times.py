"""The start-up benchmark end to end on the small synthetic MNIST, on a few of the commands
(the others differ only in the line awaited). Nothing here is timed."""
import re
import subprocess
import sys

import pytest

from conftest import REPO_DIR

BENCHMARK = REPO_DIR / "benchmarks" / "startup_times.py"
ROW = re.compile(r"^\| (?P<name>[^|]+?) \| (?P<help>[\d.-]+) \| (?P<help_cpu>[\d.-]+) \| [^|]+ "
                 r"\| (?P<first>[\d.]+) \| (?P<end>[\d.-]+) \| (?P<cpu>[\d.]+) \|$")


def test_the_benchmark_times_each_command_to_its_first_useful_line(mnist_dir, tmp_path):
    pytest.importorskip("gradio")  # the demo's rows
    result = subprocess.run(
        [sys.executable, str(BENCHMARK), "--dataset_dir", str(mnist_dir),
         "--max_train_samples", "64", "--max_test_samples", "50", "--repeats", "1",
         "--commands", "train,evaluate,embed,demo", "--work_dir", str(tmp_path),
         "--timeout", "600"],
        capture_output=True, text=True, timeout=1800, cwd=REPO_DIR, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {match["name"]: match for match in map(ROW.match, result.stdout.splitlines())
            if match}
    assert list(rows) == ["train", "evaluate", "embed", "demo (first start)", "demo (cached)"]
    for name, row in rows.items():
        assert 0 < float(row["first"]) and 0 < float(row["cpu"])
        assert (row["help"] == "-") == (name == "demo (cached)")  # its --help is the row above's
        assert (row["end"] == "-") == name.startswith("demo")  # a server is stopped, not ended
        if row["end"] != "-":
            assert float(row["first"]) <= float(row["end"])
    # the cache the first start wrote, which the second one read
    assert (tmp_path / "run" / "model" / "epoch_001.test_embedding.pt").is_file()
    assert (tmp_path / "eval.png").is_file() and (tmp_path / "ranking.png").is_file()
