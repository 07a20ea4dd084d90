"""Every error a user can fix is a UserError, which each script's main() prints as one line."""
import pytest

from run_machinery import checkpointing
import mnist_loader
from run_machinery import nan_watch
from run_machinery.errors import UserError


@pytest.mark.parametrize("error", [checkpointing.CheckpointError, checkpointing.WriteError,
                                   mnist_loader.DatasetError, nan_watch.NonFiniteError])
def test_the_projects_errors_are_user_errors(error):
    assert issubclass(error, UserError)


def test_a_user_error_from_deep_inside_is_one_line_from_main(tmp_path):
    import evaluate
    with pytest.raises(SystemExit) as stop:
        evaluate.main([str(tmp_path / "missing.pth"), "--batch_size", "1"])
    assert stop.value.code == f"error: no checkpoint file at {tmp_path / 'missing.pth'}"
