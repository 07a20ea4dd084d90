"""Stopping a run cleanly on Ctrl-C (SIGINT) or SIGTERM.

Inside `with StopSignals() as stop:` a signal before training began (`training_began`)
stops at once: there is nothing to save. During training a first signal only asks training
to stop: the step under way finishes, the training state is saved, and the run ends with the
status a shell gives that signal (128 + its number). A second signal stops at once
(KeyboardInterrupt).
`run_ending` wraps a whole run in them and turns its end into one line.
"""
import os
import signal
import sys
from contextlib import ExitStack, contextmanager

from . import distributed
from .errors import USER_ERRORS


class RunStopped(BaseException):
    """The run ends early on a signal; `str()` is the one-line message, `exit_status` the
    status. Like KeyboardInterrupt, no `except Exception` on its way may take it."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.exit_status = 128 + (signum or signal.SIGTERM)


class TrainingInterrupted(Exception):
    """A stop was asked for during an epoch; `progress` holds the epoch up to its last step."""

    def __init__(self, progress):
        super().__init__(f"stopped after step {progress.step}")
        self.progress = progress


class StopSignals:
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = None
        self.training = False
        self.last_good_state = None  # the newest training state saved, for a second signal's line

    def training_began(self):
        """From here a first signal waits for the step under way, to save the state."""
        self.training = True

    def __enter__(self):
        self.previous = {signum: signal.signal(signum, self.handle) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc_info):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        if not self.training:  # start-up work can be long; nothing of it needs saving
            raise self.stopped(f"Stopped by {signal.Signals(signum).name} before training "
                               f"began; no epoch was trained")
        # os.write, not print: the handler may run while the program is printing.
        os.write(2, f"\n{signal.Signals(signum).name}: stopping after the current step to save the "
                    f"training state; press Ctrl-C again to quit at once\n".encode())

    def requested(self):
        """Whether to stop now; under torchrun, whether any rank was signalled, so that all
        stop after the same step."""
        return distributed.any_rank(self.signum is not None)

    def stopped(self, message):
        """The `RunStopped` to raise, with `message`."""
        return RunStopped(message, self.signum)


def exit_with(ending, stop):
    """End the run on `ending` (a RunStopped, a second signal or a user's error) with one
    line and the matching exit status."""
    if isinstance(ending, RunStopped):
        message, status = str(ending), ending.exit_status
    elif isinstance(ending, KeyboardInterrupt):
        saved = f"the last training state saved is {stop.last_good_state}" \
            if stop.last_good_state else "no training state was saved"
        message, status = f"Stopped at once by a second signal; {saved}", 128 + (stop.signum or 2)
    else:
        message, status = f"error: {ending}", 1
    if status == 1:
        sys.exit(message)  # printed by Python, exit status 1
    if distributed.is_main_process():
        print(message, file=sys.stderr, flush=True)
    sys.exit(status)


class RunEnding(ExitStack):
    """What ending a run needs: its StopSignals (`stop`), and what the run holds, entered
    with `enter_context` (its folder's lock), released whatever happens."""

    def __init__(self):
        super().__init__()
        self.stop = StopSignals()


@contextmanager
def run_ending():
    """Run the block under StopSignals (yields its RunEnding); a stop, a second signal or a
    user's error ends it with one line (`exit_with`), and whatever happens what the run
    entered (its folder) and torchrun's process group are released."""
    run = RunEnding()
    try:
        with run.stop, run:
            yield run
    except (RunStopped, KeyboardInterrupt, *USER_ERRORS) as ending:
        exit_with(ending, run.stop)
    finally:
        distributed.teardown()
