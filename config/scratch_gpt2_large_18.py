# Baseline for config/inheritune_gpt2_large_18.py: the same 18-layer model from scratch, same 100K steps.
from config.train_gpt2_large import *  # noqa: F403

out_dir = "out-scratch_gpt2_large_18"
wandb_run_name = "scratch_gpt2_large_18"
n_layer = 18
