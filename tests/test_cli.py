import argparse
import subprocess
import sys

import pytest

from conftest import REPO_DIR
from run_machinery.cli import (
    DEFAULT_DATASET_DIR,
    SHIPPED_CHECKPOINT,
    HelpFormatter,
    add_checkpoint_argument,
    add_run_flags,
    add_test_split_flag,
    one_line_errors,
    printable,
    source_constants,
    source_keys,
)
from run_machinery.errors import UserError


def test_help_states_defaults_unless_said_in_words():
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    parser.add_argument("--epochs", type=int, default=100, help="number of epochs")
    parser.add_argument("--limit", type=int, default=None, help="first N images; default: all")
    parser.add_argument("--out", required=True, help="the file to write")
    text = parser.format_help()
    assert "number of epochs (default: 100)" in text
    assert "default: all" in text and "the file to write\n" in text
    assert "(default: None)" not in text


def test_one_line_errors_turn_a_user_error_and_ctrl_c_into_one_line():
    for raised, message in ((UserError("--x must be 1"), "error: --x must be 1"),
                            (KeyboardInterrupt(),
                             "Stopped by SIGINT (Ctrl-C); every file is either whole")):
        with pytest.raises(SystemExit) as stop, one_line_errors():
            raise raised
        assert str(stop.value.code).startswith(message)


def test_a_name_with_a_newline_is_printed_on_one_line():
    assert printable("runs/a/日本語 name.png") == "runs/a/日本語 name.png"
    assert printable("my\nfour\t.png") == "my\\nfour\\t.png"
    with pytest.raises(SystemExit) as stop, one_line_errors():
        raise UserError("cannot read my\nfour.png")
    assert stop.value.code == "error: cannot read my\\nfour.png"


def test_the_test_split_flag_takes_a_count_or_all(capsys):
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    add_test_split_flag(parser)
    assert parser.parse_args([]).max_test_samples is None  # the run's own test images
    assert parser.parse_args(["--max_test_samples", "all"]).max_test_samples == "all"
    assert parser.parse_args(["--max_test_samples", "7"]).max_test_samples == 7
    assert "default: the run's own" in parser.format_help()
    for value in ("0", "-3", "some", "1.5", "\u0663"):  # the last: an Arabic-Indic 3
        with pytest.raises(SystemExit):
            parser.parse_args(["--max_test_samples", value])
        assert (f"--max_test_samples: must be a whole number of at least 1 or 'all', got "
                f"{value!r}" in capsys.readouterr().err)


def test_the_run_flags_default_to_the_runs_and_know_the_names(capsys):
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    add_run_flags(parser, dataset_needed=True)
    args = parser.parse_args([])
    assert (args.dataset, args.dataset_dir, args.holdout_classes, args.head) == (None,) * 4
    args = parser.parse_args(["--dataset", "kmnist", "--holdout_classes", "8", "9",
                              "--head", "arcface"])
    assert (args.dataset, args.holdout_classes, args.head) == ("kmnist", ["8", "9"], "arcface")
    with pytest.raises(SystemExit):
        parser.parse_args(["--dataset", "cifar"])
    text = " ".join(parser.format_help().split())
    assert "(without one, this flag is needed)" in text and str(DEFAULT_DATASET_DIR) in text
    without = argparse.ArgumentParser()
    add_run_flags(without, head=False)
    assert "--head" not in without.format_help() and "else mnist" in without.format_help()


@pytest.mark.parametrize("command", ["evaluate", "export", "embed", "demo"])
def test_the_commands_that_read_a_checkpoint_share_its_flags(command):
    shared = argparse.ArgumentParser()
    add_run_flags(shared)
    parser = __import__(command).build_parser()
    theirs = {action.dest: action.help for action in parser._actions}
    for action in shared._actions:
        if action.dest in theirs and action.dest not in ("help", "dataset"):
            assert theirs[action.dest] == action.help, action.dest
    assert {"dataset_dir", "holdout_classes"} <= theirs.keys()


def test_article_names_the_shipped_model_and_is_the_default_where_said():
    parser = argparse.ArgumentParser()
    add_checkpoint_argument(parser, shipped_by_default=True)
    assert parser.parse_args([]).checkpoint == str(SHIPPED_CHECKPOINT)
    assert parser.parse_args(["article"]).checkpoint == str(SHIPPED_CHECKPOINT)
    assert parser.parse_args(["run/model/epoch_002.pth"]).checkpoint == "run/model/epoch_002.pth"
    required = argparse.ArgumentParser()
    add_checkpoint_argument(required)
    with pytest.raises(SystemExit):
        required.parse_args([])
    assert SHIPPED_CHECKPOINT.is_relative_to(REPO_DIR / "models" / "article")


COMMANDS = ("train_mnist_original_center.py", "evaluate.py", "compare.py", "animate.py",
            "embed.py", "export.py", "demo.py")
SLOW_PACKAGES = ("torch", "torchvision", "numpy", "matplotlib", "sklearn", "gradio", "onnx")
# Runs a command as `python3 COMMAND ARGS...` would, then names the slow packages it imported.
DRIVER = f"""import runpy, sys
command, sys.argv = sys.argv[1], sys.argv[1:]
try:
    runpy.run_path(command, run_name="__main__")
finally:
    print("imported:", *[name for name in {SLOW_PACKAGES!r} if name in sys.modules])
"""


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("args, status, said", [(["--help"], 0, "options:"),
                                                (["--no_such_flag"], 2, "error:")])
def test_help_and_flag_errors_come_before_the_slow_imports(command, args, status, said):
    result = subprocess.run([sys.executable, "-c", DRIVER, command, *args], capture_output=True,
                            text=True, timeout=120, cwd=REPO_DIR, check=False)
    assert result.returncode == status, result.stderr
    assert said in result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "imported:"


def test_source_constants_are_the_modules_own():
    import margin_heads
    import mnist_loader

    from run_machinery import own_images
    names = ("HEADS", "DEFAULT_SCALE", "DEFAULT_MARGIN", "MAX_SCALE", "MAX_COSINE_MARGIN",
             "MAX_SPHEREFACE_MARGIN")
    assert source_constants("margin_heads", *names) == tuple(
        getattr(margin_heads, name) for name in names)
    assert source_constants("run_machinery.own_images", "MAX_PIXELS") == (own_images.MAX_PIXELS,)
    assert source_keys("mnist_loader", "DATASETS") == tuple(mnist_loader.DATASETS)
    with pytest.raises(ValueError):  # not a literal: refused, never run
        source_constants("mnist_loader", "DATASETS")
