"""What the scripts' command lines share. It imports nothing slow: a command reads its
flags, answers --help and reports a mistyped flag before it imports torch."""
import argparse
import ast
import contextlib
import functools
import os
import signal
import sys
from pathlib import Path

# The repository's folder: the default home of datasets/ and outputs/.
REPO_DIR = Path(__file__).resolve().parent.parent


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """States each flag's default, unless its help already says it in words or the flag is
    required (and so has none)."""

    def _get_help_string(self, action):
        if "default:" in action.help or action.required:
            return action.help
        return super()._get_help_string(action)


def source_constants(module, *names):
    """The values of the top-level constants `names` of the repository's `module` (such as
    "margin_heads" or "run_machinery.own_images"), read from its source without running it:
    a parser needs them before torch, which their module imports. Literals, or products of
    them (4096 * 4096)."""
    return tuple(constant_value(top_level_values(module)[name]) for name in names)


def source_keys(module, name):
    """The keys of the dict `name` of `module`, written as literals in its source (its values
    need not be)."""
    return tuple(ast.literal_eval(key) for key in top_level_values(module)[name].keys)


@functools.cache
def top_level_values(module):
    """{name: the expression assigned to it} of the top-level assignments in `module`'s file."""
    tree = ast.parse((REPO_DIR / f"{module.replace('.', '/')}.py").read_text(encoding="utf-8"))
    return {target.id: node.value for node in tree.body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)}


def constant_value(node):
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        return constant_value(node.left) * constant_value(node.right)
    return ast.literal_eval(node)


def add_device_flag(parser):
    """The commands' --device flag (the trainer has its own, in the article's list)."""
    parser.add_argument("--device", default="auto",
                        help="where to run: auto (the current accelerator, else the CPU) or a "
                             "PyTorch device name (cpu, cuda, cuda:1, mps)")


def exit_on_signals(message):
    """Until main() sets its own handlers: Ctrl-C or SIGTERM ends the program at once with
    `message` on one line, instead of a traceback from inside an import."""
    def stop(signum, frame):
        os.write(2, f"Stopped by {signal.Signals(signum).name} {message}\n".encode())
        os._exit(128 + signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)


@contextlib.contextmanager
def one_line_errors():
    """Around a script's work: a UserError ends it with `error: ...` on one line, and from
    here Ctrl-C ends it with one line too (files are written atomically, so none is half)."""
    # Imported here, not above: the errors' modules import torch, and a command installs
    # exit_on_signals from this module before its slow imports.
    from .errors import USER_ERRORS

    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    except USER_ERRORS as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        sys.exit("Stopped by SIGINT (Ctrl-C); every file is either whole or as it was before")
