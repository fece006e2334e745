# Baseline for config/inheritune_gpt2_xl_24.py: the same 24-layer model from scratch, same 100K steps.
from config.train_gpt2_xl import *  # noqa: F403

out_dir = "out-scratch_gpt2_xl_24"
wandb_run_name = "scratch_gpt2_xl_24"
n_layer = 24
