"""The run machinery of the trainer: everything around the article's lesson.

The article's files stay at the top of the repository (train_mnist_original_center.py,
mnist_loader.py, mnist_net.py, center_loss.py, and margin_heads.py as the next lesson);
this package holds what makes a run dependable and readable, each module named for its one
job: docs/layout.md lists them, one line each.

Its modules import the article's files, never the commands that use them.
"""
