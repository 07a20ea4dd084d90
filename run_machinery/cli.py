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
# Where the datasets are, unless --dataset_dir or a run's run.json says otherwise.
DEFAULT_DATASET_DIR = REPO_DIR / "datasets"
# The one trained model the repository ships: the article's run, seed 1 (models/README.md).
SHIPPED_NAME = "article"
SHIPPED_CHECKPOINT = REPO_DIR / "models" / "article" / "model" / "epoch_040.pth"


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


def printable(text):
    """`text` (a path, a message) for one line of output: a character that is not printable,
    such as a newline in a file name, is written as its escape (\\n)."""
    text = str(text)
    return text if text.isprintable() else "".join(
        char if char.isprintable() else ascii(char)[1:-1] for char in text)


def add_device_flag(parser):
    """The commands' --device flag (the trainer has its own, in the article's list)."""
    parser.add_argument("--device", default="auto",
                        help="where to run: auto (the current accelerator, else the CPU) or a "
                             "PyTorch device name (cpu, cuda, cuda:1, mps)")


def checkpoint_path(text):
    """A CHECKPOINT argument: a path, or the shipped model's name."""
    return str(SHIPPED_CHECKPOINT) if text == SHIPPED_NAME else text


def add_checkpoint_argument(parser, shipped_by_default=False):
    """The commands' CHECKPOINT: a trainer's per-epoch .pth or training state, or `article`,
    the shipped model (the default of the commands that need no other argument)."""
    shipped = f"'{SHIPPED_NAME}': the shipped model, {SHIPPED_CHECKPOINT.relative_to(REPO_DIR)}"
    parser.add_argument("checkpoint", type=checkpoint_path,
                        nargs="?" if shipped_by_default else None,
                        default=str(SHIPPED_CHECKPOINT) if shipped_by_default else None,
                        help="a per-epoch .pth (state_dict) or training-state file of the "
                             f"trainer, with its run.json beside it or in the folder above, or "
                             f"{shipped}" + ("; default: the shipped model"
                                             if shipped_by_default else ""))


def add_run_flags(parser, dataset=True, head=True, dataset_needed=False):
    """The flags of a command that reads a checkpoint, each defaulting to what the checkpoint's
    run says: --dataset (unless not `dataset`; `dataset_needed`: without a run.json, it must
    be given), --dataset_dir, --holdout_classes and --head (unless not `head`)."""
    add = parser.add_argument
    if dataset:
        add("--dataset", choices=source_keys("mnist_loader", "DATASETS"), default=None,
            help="the dataset the model was trained on; default: the run's, from its run.json"
                 + (" (without one, this flag is needed)" if dataset_needed else ", else mnist"))
    add("--dataset_dir", default=None,
        help="the dataset's folder, as for the trainer; default: the run's, from its run.json, "
             f"else {DEFAULT_DATASET_DIR}")
    add("--holdout_classes", nargs="*", default=None, metavar="CLASS",
        help="classes held out in training, names or indices; default: the run's, from its "
             "run.json or training state, else none")
    if head:
        (heads,) = source_constants("margin_heads", "HEADS")
        add("--head", choices=heads, default=None,
            help="the head the model was trained with, which decides its predictions and "
                 "scores (an angular head's: the largest cosine); default: the run's, from its "
                 "run.json, else softmax")


# --max_test_samples's word for every test image (its default, None, is the run's subset).
ALL_TEST_IMAGES = "all"


def test_image_count(text):
    """A --max_test_samples value: "all", or a whole number of at least 1."""
    if text == ALL_TEST_IMAGES:
        return text
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1 or "
                                         f"'{ALL_TEST_IMAGES}', got {text!r}")
    return int(text)


def add_test_split_flag(parser):
    """The commands' --max_test_samples: by default a checkpoint is tested on its run's own
    test images, so that its figures are those of its training log."""
    parser.add_argument("--max_test_samples", type=test_image_count, default=None,
                        metavar=f"N|{ALL_TEST_IMAGES}",
                        help="test on the first N test images, or on all of them; default: the "
                             "run's own (its trainer's --max_test_samples, from its run.json, "
                             "when the dataset is the run's), else all")


def command_parser(description):
    """A command's ArgumentParser, with the project's help format."""
    return argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)


def parse_before_imports(parser, beginning):
    """Read the command line before the slow imports, so that --help, a mistyped flag and
    Ctrl-C answer at once; Ctrl-C until then says it came before `beginning`."""
    exit_on_signals(f"before {beginning}; nothing was written")
    parser.parse_args()


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
        sys.exit(f"error: {printable(error)}")
    except KeyboardInterrupt:
        sys.exit("Stopped by SIGINT (Ctrl-C); every file is either whole or as it was before")
