import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import train_mnist_original_center as trainer
from conftest import snapshot, stop_message, trainer_flags
from run_machinery.errors import UserError
from run_machinery.run_folder import RunPaths, recorded_settings, settings_in_folder


def settings(tmp_path, **changes):
    values = dict(out_dir=str(tmp_path / "run"), model_path_temp=None, vis_img_path_temp=None,
                  dataset_dir=str(tmp_path / "data"), dataset="mnist", holdout_classes=[8, 9],
                  epochs=3, tensorboard=None, img_show=False)
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


def test_a_runs_own_paths_are_recorded_relative_to_its_folder(tmp_path):
    tmp_path = tmp_path.resolve()
    run = tmp_path / "run"
    recorded = recorded_settings(settings(
        tmp_path, out_dir=str(run), model_path_temp=str(run / "weights" / "e_{}.pth"),
        vis_img_path_temp=str(tmp_path / "pictures" / "v_{}.png"), resume=str(run / "state.pth"),
        dataset_dir="../data"))
    assert (recorded["out_dir"], recorded["model_path_temp"], recorded["vis_img_path_temp"],
            recorded["resume"]) == (".", "weights/e_{}.pth", "../pictures/v_{}.png", "state.pth")
    assert recorded["dataset_dir"] == "../data"  # as given
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = settings_in_folder(recorded, elsewhere)
    assert (moved["out_dir"], moved["model_path_temp"], moved["resume"]) == (
        str(elsewhere), str(elsewhere / "weights" / "e_{}.pth"), str(elsewhere / "state.pth"))
    assert Path(moved["vis_img_path_temp"]).resolve() == tmp_path / "pictures" / "v_{}.png"


def test_a_run_that_recorded_absolute_paths_still_follows_its_folder(tmp_path):
    tmp_path = tmp_path.resolve()
    old = {"out_dir": "/gone/run", "model_path_temp": "/gone/run/weights/e_{}.pth",
           "vis_img_path_temp": "/elsewhere/v_{}.png", "resume": None, "epochs": 3}
    moved = settings_in_folder(old, tmp_path)
    assert (moved["out_dir"], moved["model_path_temp"], moved["vis_img_path_temp"]) == (
        str(tmp_path), str(tmp_path / "weights" / "e_{}.pth"), "/elsewhere/v_{}.png")


def test_outputs_that_share_a_file_are_refused(mnist_dir, tmp_path):
    template = str(tmp_path / "x_{}.png")
    message = stop_message(trainer_flags(mnist_dir, tmp_path, "--epochs", 2,
                                         "--model_path_temp", template,
                                         "--vis_img_path_temp", template))
    assert ("--model_path_temp and --vis_img_path_temp both write " in message
            and str(tmp_path / "x_001.png") in message and "\n" not in message)
    assert not list(tmp_path.glob("x_*")) and not (tmp_path / "run.json").exists()


def test_templates_that_meet_through_dotdot_or_a_symlink_are_refused(tmp_path):
    run = tmp_path / "run"
    (run / "visual").mkdir(parents=True)
    (run / "pictures").symlink_to(run / "visual")
    for changes, fragment in [
        (dict(model_path_temp=f"{run}/{{}}/../x.pth"), "--model_path_temp writes one file, "),
        (dict(model_path_temp=f"{run}/c/../epoch_{{}}/../../run/history.csv"),
         "--model_path_temp writes one file, "),
        (dict(model_path_temp=f"{run}/pictures/epoch_{{}}.png"),
         "--model_path_temp and --vis_img_path_temp both write "),
        (dict(model_path_temp=f"{run}/model/../features{{}}.gif", vis_img_path_temp=None),
         None),
        (dict(tensorboard=str(run / "model" / ".." / "history.csv")),
         "history.csv and --tensorboard both write "),
    ]:
        paths = RunPaths.from_settings(settings(tmp_path, **changes))
        if fragment is None:
            paths.check(3)  # features001.gif is no features.gif
            continue
        with pytest.raises(UserError, match=fragment):
            paths.check(3)


def test_templates_that_meet_at_a_later_epoch(tmp_path):
    # epoch 1001's picture e1001.png would be epoch 1's checkpoint
    paths = RunPaths.from_settings(settings(tmp_path, model_path_temp=str(tmp_path / "e1{}.png"),
                                            vis_img_path_temp=str(tmp_path / "e{}.png")))
    paths.check(1000)
    with pytest.raises(UserError, match="e1001.png"):
        paths.check(1001)


def test_another_runs_files_stay_as_they_were_when_templates_meet(mnist_dir, tmp_path):
    other = tmp_path / "other"
    trainer.main(trainer_flags(mnist_dir, other, "--epochs", 1, "--max_train_samples", 64))
    before = snapshot(other)
    message = stop_message(trainer_flags(
        mnist_dir, tmp_path / "new", "--epochs", 2, "--max_train_samples", 64,
        "--model_path_temp", f"{other}/{{}}/../training_state.pth",
        "--vis_img_path_temp", f"{other}/{{}}/../history.png"))
    assert "writes one file, " in message and "\n" not in message
    assert snapshot(other) == before


def test_start_up_checks_do_not_grow_with_the_epochs(tmp_path):
    paths = RunPaths.from_settings(settings(tmp_path))
    start = time.monotonic()
    paths.check(10 ** 8)
    paths.claim(resuming=False, overwrite=False)
    assert time.monotonic() - start < 1


def test_overwrite_removes_only_the_runs_files_in_its_folder(mnist_dir, tmp_path, capsys):
    victim = tmp_path / "victim"
    trainer.main(trainer_flags(mnist_dir, victim, "--epochs", 2, "--max_train_samples", 64))
    before = snapshot(victim)
    message = stop_message(trainer_flags(
        mnist_dir, tmp_path / "new", "--epochs", 1, "--max_train_samples", 64, "--overwrite",
        "--model_path_temp", f"{victim}/model/epoch_{{}}.pth"))
    # another run's folder is refused before anything (output_paths), not only its files
    assert (f"--model_path_temp writes {victim / 'model' / 'epoch_001.pth'}, in the folder of "
            f"another run ({victim})" in message and "\n" not in message)
    assert snapshot(victim) == before
    (tmp_path / "loose").mkdir()  # files of no run's folder, which --overwrite never deletes
    (tmp_path / "loose" / "epoch_001.pth").write_text("mine")
    message = stop_message(trainer_flags(
        mnist_dir, tmp_path / "new", "--epochs", 1, "--max_train_samples", 64, "--overwrite",
        "--model_path_temp", f"{tmp_path}/loose/epoch_{{}}.pth"))
    assert f"{tmp_path / 'loose' / 'epoch_001.pth'} outside {tmp_path / 'new'}" in message
    assert (tmp_path / "loose" / "epoch_001.pth").read_text() == "mine"
    (victim / "notes.txt").write_text("mine")
    capsys.readouterr()
    trainer.main(trainer_flags(mnist_dir, victim, "--epochs", 1, "--max_train_samples", 64,
                               "--overwrite"))
    said = capsys.readouterr().out
    assert (f"--overwrite: deleted 10 files of the run in {victim}: run.json, history.csv, "
            in said and "model/epoch_002.pth, visual/epoch_001.png" in said)
    assert (victim / "notes.txt").read_text() == "mine"


def test_a_run_lock_that_is_a_symlink_is_refused(mnist_dir, tmp_path):
    target = tmp_path / "somefile"
    target.write_text("precious\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.lock").symlink_to(target)
    message = stop_message(trainer_flags(mnist_dir, tmp_path / "run", "--epochs", 1,
                                         "--max_train_samples", 64))
    assert f"{tmp_path / 'run' / 'run.lock'} is a symbolic link" in message
    assert target.read_text() == "precious\n"


def test_a_start_that_cannot_work_writes_nothing(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as when not installed
    message = stop_message(trainer_flags(mnist_dir, tmp_path, "--epochs", 1,
                                         "--max_train_samples", 64,
                                         "--tensorboard", tmp_path / "tb"))
    assert "--tensorboard needs the tensorboard package" in message
    assert not (tmp_path / "run.json").exists()
    trainer.main(trainer_flags(mnist_dir, tmp_path, "--epochs", 1, "--max_train_samples", 64))


def test_a_run_that_never_finished_an_epoch_may_start_again(mnist_dir, tmp_path):
    message = stop_message(["--dataset_dir", str(mnist_dir), "--max_train_samples", "128",
                            "--batch_size", "32", "--device", "cpu", "--head", "cosface",
                            "--lr", "100", "--out_dir", str(tmp_path)])
    assert message.startswith("error: the features blew up") and (tmp_path / "run.json").exists()
    trainer.main(trainer_flags(mnist_dir, tmp_path, "--epochs", 1, "--max_train_samples", 64))
    assert (tmp_path / "training_state.pth").is_file()
