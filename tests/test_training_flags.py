import argparse
import subprocess
import sys

import pytest

from conftest import REPO_DIR
from run_machinery.training_flags import ARTICLE_FLAGS, add_training_flags

ARTICLE = {flag: {"default": f"article {flag}", "help": "the article's"} for flag in ARTICLE_FLAGS}


def parser_of(article_flags):
    parser = argparse.ArgumentParser()
    add_training_flags(parser, article_flags)
    return parser


def test_the_articles_flags_keep_their_places_among_the_projects():
    """The settings' order, that of run.json and the training state, is the flags' order."""
    settings = vars(parser_of(ARTICLE).parse_args([]))
    assert list(settings)[:6] == ["dataset", "dataset_dir", "out_dir", "model_path_temp",
                                  "vis_img_path_temp", "epochs"]
    assert all(settings[flag.lstrip("-")] == f"article {flag}" for flag in ARTICLE_FLAGS)
    assert settings["loss_weight"] == 1.0 and settings["head"] == "softmax"


def test_each_of_the_articles_flags_is_the_scripts_to_give():
    with pytest.raises(KeyError, match="--vis_img_path_temp"):
        parser_of({flag: ARTICLE[flag] for flag in ARTICLE_FLAGS[:2]})


def test_declared_without_importing_torch():
    code = ("import sys; import run_machinery.training_flags; "
            "sys.exit('torch' in sys.modules or 'numpy' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_DIR).returncode == 0
