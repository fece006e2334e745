# Baseline for config/inheritune_shakespeare.py: the same 4-layer model trained from scratch, same steps.
from config.train_shakespeare import *  # noqa: F403

out_dir = "out-demo/scratch"
n_layer = 4
