"""Every error a user can fix is one of USER_ERRORS, which each script's main() prints as one
line."""
import pytest

import margin_heads
import mnist_loader

from run_machinery import checkpointing, nan_watch
from run_machinery.errors import USER_ERRORS, UserError


@pytest.mark.parametrize("error", [checkpointing.CheckpointError, checkpointing.WriteError,
                                   nan_watch.NonFiniteError])
def test_the_machinerys_errors_are_user_errors(error):
    assert issubclass(error, UserError)


def test_the_article_modules_errors_are_reported_too():
    """They import no project module, so their errors are their own; USER_ERRORS names them."""
    assert (mnist_loader.DatasetError in USER_ERRORS
            and margin_heads.HeadSettingsError in USER_ERRORS)
    assert not issubclass(mnist_loader.DatasetError, UserError)


def test_a_user_error_from_deep_inside_is_one_line_from_main(tmp_path):
    import evaluate
    with pytest.raises(SystemExit) as stop:
        evaluate.main([str(tmp_path / "missing.pth"), "--batch_size", "1"])
    assert stop.value.code == f"error: no checkpoint file at {tmp_path / 'missing.pth'}"
