import argparse

from cli import HelpFormatter


def test_help_states_defaults_unless_said_in_words():
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    parser.add_argument("--epochs", type=int, default=100, help="number of epochs")
    parser.add_argument("--limit", type=int, default=None, help="first N images; default: all")
    text = parser.format_help()
    assert "number of epochs (default: 100)" in text
    assert "default: all" in text and "(default: None)" not in text
