"""Runs the trainer as torchrun starts it, for tests/test_distributed.py, and records what
only the ranks themselves know: each rank's final weights and centres.

    torchrun ... tests/ddp_driver.py RECORD_DIR [FAIL_RANK] -- TRAINER FLAGS

With FAIL_RANK, that rank raises an error at the start of its second epoch.
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import train_mnist_original_center as trainer  # noqa: E402


def main():
    split = sys.argv.index("--")
    record_dir, *fail_rank = sys.argv[1:split]
    rank = int(os.environ["RANK"])
    seen = {}
    real_train = trainer.train

    def recording_train(model, train_loader, nll_loss, center_loss, *args, **kwargs):
        seen["model"], seen["center_loss"] = model, center_loss
        seen["epochs"] = seen.get("epochs", 0) + 1
        if fail_rank and rank == int(fail_rank[0]) and seen["epochs"] == 2:
            raise RuntimeError(f"injected failure on rank {rank}")
        return real_train(model, train_loader, nll_loss, center_loss, *args, **kwargs)

    trainer.train = recording_train
    trainer.main(sys.argv[split + 1:])
    torch.save({"model": seen["model"].module.state_dict(),
                "centers": seen["center_loss"].centers.detach()},
               Path(record_dir) / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
