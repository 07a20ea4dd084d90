"""The run machinery of the trainer: everything around the article's lesson.

The article's files stay at the top of the repository (train_mnist_original_center.py,
mnist_loader.py, mnist_net.py, center_loss.py, and margin_heads.py as the next lesson);
this package holds what makes a run dependable and readable:

  settings        the checks a run's settings pass before anything is loaded
  devices         where to run, and the speed settings that go with the device
  distributed     torchrun's processes: their share of the data, their sums
  run_folder      where each file of a run goes, and run.json, the run described
  run_record      run.json read back and checked, for every command that reads it
  epoch_files     the files written after each epoch and at the end
  checkpointing   files written whole or not at all, and read safely
  training_state  the one file from which a stopped run goes on exactly
  history         the records of the epochs: the screen's lines and history.csv
  stop_signals    a clean stop on Ctrl-C or SIGTERM
  nan_watch       NaN, infinite and blown-up values caught, with advice
  metrics         the features of a split and their retrieval quality
  triplet_loss    the batch-hard triplet loss (Hermans et al. 2017), beside the Center Loss
  plots           the pictures: features, decision regions, curves, animation
  checkpoint_run  a checkpoint read, with what its run says about it, and its test split
  evaluation      a checkpoint measured and drawn (evaluate.py, compare.py)
  own_images      pictures of one's own read, prepared as the dataset's, and placed (embed.py)
  onnx_export     a checkpoint's Net as an ONNX file, checked against PyTorch (export.py)
  output_paths    the one rule for every command's outputs: never what it reads, a run's or
                  the dataset's file, a special file, or another of its outputs
  cli             what the commands' command lines share
  errors          the one kind of error reported to the user, in one line

Its modules import the article's files, never the commands that use them.
"""
