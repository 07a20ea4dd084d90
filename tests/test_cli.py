import argparse

import pytest

from run_machinery.cli import (REPO_DIR, SHIPPED_CHECKPOINT, HelpFormatter,
                               add_checkpoint_argument, add_test_split_flag, one_line_errors)
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
