"""The one rule for output paths: what it refuses, in each command (one line, exit status 1,
every file byte-identical), and a walk over every command's flags that fails on an output
flag the rule does not check."""
import argparse
import json
import os
import shutil
import socket
import stat

import pytest
from PIL import Image

import animate
import compare
import demo
import embed
import evaluate
import export
from conftest import snapshot, stop_message, trainer_flags
from run_machinery.errors import UserError
from run_machinery.output_paths import check_outputs, check_run_outputs
from run_machinery.run_folder import RunPaths


@pytest.fixture
def run(two_epoch_run, tmp_path):
    """A copy of the two-epoch run (a run folder whose files a refusal must leave as they
    were) and a picture of one's own beside it."""
    folder = tmp_path / "run"
    shutil.copytree(two_epoch_run[1], folder)
    Image.new("L", (28, 28)).save(tmp_path / "img.png")
    return folder


def refused(command, argv):
    """The one line with which `command`'s main refuses `argv`."""
    with pytest.raises(SystemExit) as stop:
        command.main([str(arg) for arg in argv])
    assert isinstance(stop.value.code, str) and stop.value.code.startswith("error: ")
    assert "\n" not in stop.value.code
    return stop.value.code


def checkpoint(folder):
    return folder / "model" / "epoch_001.pth"


@pytest.mark.parametrize("command, argv, flag, target, reason", [
    (embed, ["{ck}", "{img}", "--json"], "--json", "{ck}", "which this command reads"),
    (embed, ["{ck}", "{img}", "--json"], "--json", "{run}/run.json", "a file of the run"),
    (embed, ["{ck}", "{img}", "--plot"], "--plot", "{img}", "which this command reads"),
    (export, ["{ck}", "--onnx"], "--onnx", "{run}/training_state.pth", "a file of the run"),
    (export, ["{ck}", "--onnx"], "--onnx", "{run}/run.json", "a file of the run"),
    (export, ["{ck}", "--onnx"], "--onnx", "{run}/model/epoch_002.pth", "a file of the run"),
    (evaluate, ["{ck}", "--json"], "--json", "{run}/history.csv", "a file of the run"),
    (evaluate, ["{ck}", "--plot"], "--plot", "{run}/visual/epoch_001.png", "a file of the run"),
    (evaluate, ["{ck}", "--json"], "--json", "{run}/../run/./test_features.pt",
     "a file of the run"),
    (animate, ["{run}/test_features.pt", "--out"], "--out", "{run}/run.lock",
     "a file of the run"),
    (compare, ["{run}", "--out", "{tmp}/c.png", "--markdown"], "--markdown", "{run}/history.csv",
     "a file of the run"),
])
def test_an_output_over_what_is_read_or_a_runs_file_is_refused(run, tmp_path, command, argv,
                                                               flag, target, reason):
    names = dict(ck=checkpoint(run), img=tmp_path / "img.png", run=run, tmp=tmp_path)
    before = snapshot(tmp_path)
    target = target.format(**names)
    message = refused(command, [arg.format(**names) for arg in argv] + [target])
    assert message.startswith(f"error: {flag} {target}: it is ") and reason in message
    assert snapshot(tmp_path) == before


def test_an_output_through_a_symbolic_link_or_a_hard_link_is_refused(run, tmp_path):
    before = snapshot(run)
    (tmp_path / "link.json").symlink_to(run / "history.csv")
    os.link(checkpoint(run), tmp_path / "hard.pth")
    for target in ("link.json", "hard.pth"):
        refused(evaluate, [checkpoint(run), "--json", tmp_path / target])
    assert snapshot(run) == before


def test_two_outputs_of_one_command_may_not_be_one_file(run, tmp_path):
    message = refused(embed, [checkpoint(run), tmp_path / "img.png", "--json",
                              tmp_path / "out.png", "--plot", tmp_path / "sub" / ".." / "out.png"])
    assert message == (f"error: --json and --plot both write {tmp_path}/sub/../out.png; give "
                       f"each output its own file")
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "sub").exists()


def test_no_output_replaces_a_special_file(run, tmp_path):
    os.mkfifo(tmp_path / "pipe")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "sock"))
    try:
        for target, kind in ((tmp_path / "pipe", "a named pipe"), (tmp_path / "sock", "a socket"),
                             ("/dev/null", "a device"), (tmp_path, "a folder")):
            message = refused(export, [checkpoint(run), "--onnx", target])
            assert message == f"error: --onnx {target}: it is {kind}, not a regular file; " \
                              "write elsewhere"
    finally:
        listener.close()
    assert stat.S_ISFIFO(os.stat(tmp_path / "pipe").st_mode)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)  # as root too: still the device


def test_the_datasets_files_are_not_outputs(run, mnist_dir, image_folder_dir, tmp_path):
    idx = mnist_dir / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    message = refused(evaluate, [checkpoint(run), "--json", idx])
    assert message.endswith(f"it is a file of the dataset in {mnist_dir}; write elsewhere")
    for path in ("train/ant/new.png", "decoded_test.pt"):
        with pytest.raises(UserError, match="a file of the dataset"):
            check_outputs([("--plot", image_folder_dir / path)], dataset="folder",
                          dataset_dir=image_folder_dir)


def test_a_missing_folder_is_made_but_a_file_is_no_folder(run, tmp_path):
    check_outputs([("--json", tmp_path / "new" / "deeper" / "a.json")])
    (tmp_path / "plain").write_text("")
    with pytest.raises(UserError, match="plain is not a folder"):
        check_outputs([("--json", tmp_path / "plain" / "a.json")])
    # a picture beside a run's files, in its folder, is not one of them
    check_outputs([("--plot", run / "eval.png"), ("--json", run / "model.json")])


def test_a_runs_recorded_templates_are_its_files(run):
    recorded = json.loads((run / "run.json").read_text())
    recorded["settings"]["model_path_temp"] = f"{recorded['settings']['out_dir']}/w/w_{{}}.pth"
    (run / "run.json").write_text(json.dumps(recorded))
    # the run as it is now, its templates moved with it from where it was written
    with pytest.raises(UserError, match="a file of the run"):
        check_outputs([("--json", run / "w" / "w_007.pth")])
    check_outputs([("--json", run / "w" / "notes.json")])


def test_the_trainer_writes_neither_into_the_dataset_nor_into_another_run(run, mnist_dir,
                                                                          tmp_path):
    before, data = snapshot(run), snapshot(mnist_dir)
    for flags, message in (
            (["--model_path_temp", f"{mnist_dir}/MNIST/raw/epoch_{{}}.pth"],
             f"writes {mnist_dir}/MNIST/raw/epoch_001.pth, a file of the dataset"),
            (["--vis_img_path_temp", f"{run}/visual/e{{}}.png"], "in the folder of another run")):
        assert message in stop_message(trainer_flags(mnist_dir, tmp_path / "new", *flags))
        assert not (tmp_path / "new").exists()
    # TensorBoard's folder too (checked here: its package need not be installed)
    new = tmp_path / "new"
    paths = RunPaths(new, f"{new}/model/epoch_{{}}.pth", f"{new}/visual/epoch_{{}}.png", f"{run}/tb")
    with pytest.raises(UserError, match=f"--tensorboard writes {run}/tb, in the folder of another "
                                        f"run"):
        check_run_outputs(paths, 2, "mnist", mnist_dir)
    assert snapshot(run) == before and snapshot(mnist_dir) == data and not new.exists()


# The flags of the commands that take a string but are no output: read, or no path.
NOT_OUTPUTS = {"--dataset_dir": "read", "--device": "a device", "--host": "an address"}


def string_flags(parser):
    return [action.option_strings[-1] for action in parser._actions
            if action.option_strings and isinstance(action, argparse._StoreAction)
            and action.type in (None, str) and action.choices is None and action.nargs is None]


@pytest.mark.parametrize("command, argv", [
    (evaluate, ["{ck}"]), (embed, ["{ck}", "{img}"]), (export, ["{ck}", "--onnx", "{tmp}/m.onnx"]),
    (compare, ["{run}", "--out", "{tmp}/c.png"]), (animate, ["{run}/test_features.pt"]),
    (demo, None),
])
def test_every_output_flag_of_every_command_is_checked(run, tmp_path, command, argv):
    """Each flag that takes a string and is no input must refuse a run's file (a picture, so
    that no format check refuses it first): a new output flag the rule does not check fails
    here (a new input flag goes into NOT_OUTPUTS)."""
    names = dict(ck=checkpoint(run), img=tmp_path / "img.png", run=run, tmp=tmp_path)
    flags = [flag for flag in string_flags(command.build_parser()) if flag not in NOT_OUTPUTS]
    if argv is None:  # the demo writes no file of the user's
        assert flags == []
        return
    assert flags
    before = snapshot(tmp_path)
    for flag in flags:
        message = refused(command, [arg.format(**names) for arg in argv]
                          + [flag, run / "visual" / "epoch_001.png"])
        assert message.startswith(f"error: {flag} {run / 'visual' / 'epoch_001.png'}: it is a "
                                  f"file of the run")
    assert snapshot(tmp_path) == before
