# Baseline for config/inheritune_shakespeare.py: the 4-layer model from scratch for twice the steps.
from config.train_shakespeare import *  # noqa: F403

out_dir = "out-demo/scratch-2x"
n_layer = 4
max_iters = 2 * max_iters  # noqa: F405
lr_decay_iters = max_iters
