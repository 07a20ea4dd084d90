import json
from types import SimpleNamespace

import pytest
import torch

from mnist_loader import TensorLoader
from run_machinery.errors import UserError
from run_machinery.devices import cpu_kind
from run_machinery.run_folder import RunPaths, find_run_file, read_run_file, write_run_file


def settings(tmp_path, **changes):
    values = dict(out_dir=str(tmp_path / "run"), model_path_temp=None, vis_img_path_temp=None,
                  dataset_dir=str(tmp_path / "data"), dataset="mnist", holdout_classes=[8, 9],
                  epochs=3)
    values.update(changes)
    return SimpleNamespace(**values)


def test_the_layout_of_a_run(tmp_path):
    paths = RunPaths.from_settings(settings(tmp_path))
    run = tmp_path / "run"
    assert (paths.model(7), paths.visual(12)) == (run / "model" / "epoch_007.pth",
                                                  run / "visual" / "epoch_012.png")
    assert (paths.run_file, paths.history, paths.curves, paths.training_state,
            paths.test_features, paths.gif) == (
        run / "run.json", run / "history.csv", run / "history.png", run / "training_state.pth",
        run / "test_features.pt", run / "features.gif")


def test_the_articles_templates_win(tmp_path):
    paths = RunPaths.from_settings(settings(tmp_path, model_path_temp=str(tmp_path / "m{}.pth")))
    assert (paths.model(3) == tmp_path / "m003.pth"
            and paths.visual(3) == tmp_path / "run" / "visual" / "epoch_003.png")


@pytest.mark.parametrize("template, message", [
    ("model.pth", "must contain {}"),
    ("model_{}_{}.pth", "is not a valid path template"),
])
def test_bad_templates(tmp_path, template, message):
    with pytest.raises(UserError, match=message):
        RunPaths.from_settings(settings(tmp_path,
                                        model_path_temp=str(tmp_path / template))).check(1)


def test_run_file_describes_the_run_and_keeps_its_start(tmp_path):
    paths = RunPaths.from_settings(settings(tmp_path))
    loader = TensorLoader(torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long), 1,
                          mean=0.25, std=0.5, class_names=("ant", "bee", "cat"))
    write_run_file(paths, settings(tmp_path), tuple(range(8)), loader, torch.device("cpu"))
    run = read_run_file(paths.out_dir)
    assert (run["settings"]["epochs"] == 3 and run["holdout_classes"] == [8, 9]
            and run["classes"] == list(range(8)))
    # the loader's names and normalisation, which a folder dataset's own images decide
    assert run["dataset"] == "mnist" and run["class_names"] == ["ant", "bee", "cat"]
    assert (run["mean"], run["std"], run["processes"]) == (0.25, 0.5, 1)
    assert run["torch"] == torch.__version__ and run["device"] == "cpu" and run["resumed"] == []
    assert run["dataset_dir"] == str((tmp_path / "data").resolve())
    assert run["cpu"] == cpu_kind()  # the machine the run's speed depends on
    assert run["git_commit"] is None or len(run["git_commit"].split("+")[0]) == 40
    write_run_file(paths, settings(tmp_path, epochs=5), (0, 1), loader, torch.device("cpu"),
                   resumed=True)
    again = read_run_file(paths.out_dir)
    assert (again["started"] == run["started"] and len(again["resumed"]) == 1
            and again["settings"]["epochs"] == 5)


def test_a_checkpoint_finds_its_run_file(tmp_path):
    (tmp_path / "run" / "model").mkdir(parents=True)
    (tmp_path / "run" / "run.json").write_text(json.dumps({"holdout_classes": [3]}))
    assert find_run_file(tmp_path / "run" / "model" / "epoch_001.pth") == {"holdout_classes": [3]}
    assert find_run_file(tmp_path / "run" / "training_state.pth") == {"holdout_classes": [3]}
    assert find_run_file(tmp_path / "elsewhere.pth") is None
    (tmp_path / "run" / "run.json").write_text("{ not json")
    with pytest.raises(UserError, match="is not a readable run file"):
        find_run_file(tmp_path / "run" / "model" / "epoch_001.pth")
