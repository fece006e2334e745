# Baseline for config/inheritune_gpt2_large_18.py: the 18-layer model from scratch for twice the steps.
from config.train_gpt2_large import *  # noqa: F403

out_dir = "out-scratch_gpt2_large_18_2x"
wandb_run_name = "scratch_gpt2_large_18_2x"
n_layer = 18
max_iters = 200000
lr_decay_iters = 200000
