"""The lesson's notebooks (notebooks/*.ipynb): each executed from top to bottom by a real
kernel on a small subset, failing on any cell's error, and the committed ones carrying the
outputs of an execution at their default settings."""
import re

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REAL_MNIST_DIR, REPO_DIR

NOTEBOOKS_DIR = REPO_DIR / "notebooks"
NOTEBOOKS = ("metric_learning_mnist.ipynb", "metric_learning_mnist.ja.ipynb")
EPOCHS = 2  # two, so that the loop of epochs goes round
MAX_BYTES = 1_000_000  # a committed notebook with its pictures, as the web shows it


def read(name):
    return nbformat.read(NOTEBOOKS_DIR / name, as_version=4)


def cell_of(notebook, text):
    """The one code cell whose source has `text`."""
    [cell] = [cell for cell in notebook.cells if cell.cell_type == "code" and text in cell.source]
    return cell


def pictures(cell):
    return [output for output in cell.outputs if "image/png" in output.get("data", {})]


def printed(cell):
    return "".join(output.get("text", "") for output in cell.outputs)


@pytest.fixture
def lesson_data(mnist_dir):
    """The real MNIST when it is beside the repository, else the small written one."""
    return REAL_MNIST_DIR if (REAL_MNIST_DIR / "MNIST" / "raw").is_dir() else mnist_dir


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_notebook_runs_from_top_to_bottom(name, lesson_data, tmp_path, monkeypatch):
    for variable, value in (("TRAIN_IMAGES", 300), ("TEST_IMAGES", 100), ("EPOCHS", EPOCHS),
                            ("DATASET_DIR", lesson_data), ("OUT_DIR", tmp_path)):
        monkeypatch.setenv(f"NOTEBOOK_{variable}", str(value))  # the kernel inherits them
    notebook = read(name)
    # A cell's error raises CellExecutionError: the test fails with its traceback.
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS_DIR)}}).execute()
    assert len(pictures(cell_of(notebook, "visualize("))) == EPOCHS
    assert printed(cell_of(notebook, "Net.from_state_dict")).rstrip().endswith("True")
    assert len(pictures(cell_of(notebook, "evaluate.main("))) == 2  # the map and the ranking
    assert pictures(cell_of(notebook, "embed.main("))
    assert sorted(path.name for path in tmp_path.glob("epoch_*.png")) == [
        f"epoch_{epoch:03d}.png" for epoch in range(1, EPOCHS + 1)]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_committed_notebook_carries_a_whole_execution(name):
    notebook = read(name)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    # every cell run once, in order, and none failed
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    assert not [output for cell in code for output in cell.outputs
                if output.output_type == "error"]
    # at the notebook's own default number of epochs: a picture each
    default_epochs = int(re.search(r'"NOTEBOOK_EPOCHS", (\d+)', code[0].source).group(1))
    assert len(pictures(cell_of(notebook, "visualize("))) == default_epochs
    assert pictures(cell_of(notebook, "evaluate.main(")) and pictures(
        cell_of(notebook, "embed.main("))
    text = (NOTEBOOKS_DIR / name).read_text(encoding="utf-8")
    assert len(text.encode()) < MAX_BYTES
    assert str(REPO_DIR.parent) not in text  # no path of the machine it ran on
