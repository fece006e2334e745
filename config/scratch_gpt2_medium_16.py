# Baseline for config/inheritune_gpt2_medium_16.py: the same 16-layer model from scratch, same 100K steps.
from config.train_gpt2_medium import *  # noqa: F403

out_dir = "out-scratch_gpt2_medium_16"
wandb_run_name = "scratch_gpt2_medium_16"
n_layer = 16
