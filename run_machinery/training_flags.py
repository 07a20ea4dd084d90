"""The trainer's flags that are not the article's, declared before torch is imported (so that
--help answers at once): the article's three stay in train_mnist_original_center.py, which
gives them to `add_training_flags` to take their places among these."""
import argparse

from . import cli

# The parser's choices and limits, read from their owners' source: --help comes before torch.
HEADS, DEFAULT_SCALE, DEFAULT_MARGIN, MAX_SCALE, MAX_COSINE_MARGIN, MAX_SPHEREFACE_MARGIN = (
    cli.source_constants("margin_heads", "HEADS", "DEFAULT_SCALE", "DEFAULT_MARGIN", "MAX_SCALE",
                         "MAX_COSINE_MARGIN", "MAX_SPHEREFACE_MARGIN"))
DATASET_NAMES = cli.source_keys("mnist_loader", "DATASETS")
(MAX_FEAT_DIM,) = cli.source_constants("run_machinery.settings", "MAX_FEAT_DIM")
ARTICLE_FLAGS = ("--dataset_dir", "--model_path_temp", "--vis_img_path_temp")


def add_training_flags(parser, article_flags):
    """Declare the trainer's flags on `parser`: the project's, with the article's where they
    have always stood among them (the order of a run's settings in run.json and its training
    state). `article_flags`: each of ARTICLE_FLAGS -> its add_argument keywords."""
    add = parser.add_argument
    add("--dataset", choices=DATASET_NAMES, default="mnist",
        help="mnist (the article's), fashion-mnist (Zalando's clothes), kmnist (Kuzushiji-MNIST, "
             "cursive hiragana) or folder (your own images in --dataset_dir, made 28x28 grayscale, "
             "a class a folder); each normalised with its own training split's mean and standard "
             "deviation")
    add("--dataset_dir", **article_flags["--dataset_dir"])
    add("--out_dir", default=str(cli.REPO_DIR / "outputs"),
        help="the run's folder: run.json, model/epoch_NNN.pth, visual/epoch_NNN.png, history.csv, "
             "training_state.pth")
    for flag in ARTICLE_FLAGS[1:]:
        add(flag, **article_flags[flag])
    add("--epochs", type=int, default=100, help="number of epochs")
    add("--batch_size", type=int, default=128,
        help="training and test batch size; under torchrun the global training batch, split evenly "
             "across the processes")
    add("--lr", type=float, default=0.001, help="learning rate of the network (SGD)")
    add("--momentum", type=float, default=0.9, help="SGD momentum of the network, below 1")
    add("--weight_decay", type=float, default=5e-4, help="weight decay of the network")
    add("--step_size", type=int, default=20, help="StepLR: epochs between learning-rate decays")
    add("--gamma", type=float, default=0.8, help="StepLR: learning-rate decay factor")
    add("--center_lr", type=float, default=0.5, help="learning rate of the centres (SGD)")
    add("--loss_weight", type=float, default=1.0,
        help="weight of the Center Loss in the total loss (0: the head alone)")
    add("--softmax_weight", type=float, default=1.0,
        help="weight of the head's loss (softmax, or an angular head's) in the total loss; 0: "
             "none, the feature learned by the triplet loss alone (its classifier then stays "
             "untrained: judge such a run by its retrieval figures)")
    add("--triplet_weight", type=float, default=0.0,
        help="weight of the batch-hard triplet loss (Hermans et al. 2017) in the total loss, on "
             "ip1 (by direction for an angular head); needs PK batches; 0: none, the article's")
    add("--triplet_margin", type=float, default=0.3,
        help="the triplet loss's margin; 0: the soft margin, softplus(d_ap - d_an)")
    add("--classes_per_batch", type=int, default=None, metavar="P",
        help="PK batches, as re-identification trains: P classes drawn at random per batch, with "
             "--images_per_class K images of each (a batch of P x K, instead of --batch_size); "
             "default: off, the article's shuffled batches")
    add("--images_per_class", type=int, default=None, metavar="K",
        help="K, the images of each class in a PK batch (with --classes_per_batch); default: off")
    add("--feat_dim", type=int, default=2,
        help=f"width of the feature ip1, 2 to {MAX_FEAT_DIM} (2: the article's, drawn as it is; "
             "3: drawn in 3-D; more, as in face recognition and re-identification: drawn by its "
             "two principal axes)")
    add("--head", choices=HEADS, default="softmax",
        help="the classifier on the feature, on ip2's weights: softmax (the article's), or an "
             "angular-margin head of face recognition: normface, cosface, arcface, sphereface "
             "(see margin_heads.py)")
    add("--scale", type=float, default=None,
        help=f"s, the logit scale of normface, cosface and arcface, above 0 and at most "
             f"{MAX_SCALE:g}; default: "
             + ", ".join(f"{head} {value:g}" for head, value in DEFAULT_SCALE.items()))
    add("--margin", type=float, default=None,
        help=f"m: cosface's cosine margin, 0 to below {MAX_COSINE_MARGIN:g}; arcface's angle margin "
             f"in radians, 0 to below pi; sphereface's angle multiplier, an integer from 1 to "
             f"{MAX_SPHEREFACE_MARGIN}; default: "
             + ", ".join(f"{head} {value:g}" for head, value in DEFAULT_MARGIN.items()))
    add("--seed", type=int, default=1,
        help="random seed, 0 to 2**32 - 1 (weights, centres, shuffling; Python's random and "
             "NumPy too)")
    add("--device", default="auto",
        help="where to train: auto (the current accelerator, e.g. CUDA or MPS, else the CPU), or a "
             "PyTorch device name such as cpu, cuda, cuda:1, mps")
    add("--max_train_samples", type=int, default=None,
        help="use only the first N training images (quick runs, tests); default: all")
    add("--max_test_samples", type=int, default=None,
        help="use only the first N test images; default: all")
    add("--amp", action="store_true",
        help="bfloat16 autocast for the forward pass and the loss, on an accelerator or a CPU with "
             "native bf16 (AVX512-BF16 or AMX); off: float32 throughout")
    add("--channels_last", action=argparse.BooleanOptionalAction, default=True,
        help="keep the network's weights and activations in channels-last memory format, in which "
             "the CPU's convolutions and pooling run faster")
    add("--compile", action="store_true",
        help="torch.compile the network; the first epoch then includes the compile time")
    add("--holdout_classes", nargs="*", default=[], metavar="CLASS",
        help="classes left out of training, to see where never-seen classes land: class names "
             "(a folder dataset's: its class folders) or indices from 0 (e.g. --holdout_classes 8 "
             "9, or Shirt Bag); default: none")
    add("--tensorboard", metavar="DIR", default=None,
        help="also log to TensorBoard in DIR (needs the tensorboard package); default: off")
    add("--img_show", action="store_true",
        help="save a grid of the first --batch_size training images "
             "(OUT_DIR/visual/train_batch.png) and show it when a display exists")
    add("--overwrite", action="store_true",
        help="start a new run in an --out_dir that holds another run's outputs, deleting that "
             "run's files there first (and naming them); never a file outside --out_dir")
    add("--resume", metavar="PATH", default=None,
        help="continue a stopped run: its training_state.pth, its folder, or 'auto' for the one in "
             "--out_dir. The run goes on in its folder as it is now and keeps its settings unless "
             "they are given again, but for those fixed on resume (the data order's, --dataset, "
             "--head, --scale, --margin, --feat_dim); --epochs counts all epochs, the done ones "
             "included; default: start a new run")
    add("--dry_run", action="store_true",
        help="one training step and one test batch on the first images, writing nothing: a quick "
             "check that the install works")
