# Baseline for config/inheritune_gpt2_large_18.py: the same 18-layer model from scratch, same 100K steps.
# 100K steps x 49,152 tokens per step (48 sequences x 1024) = 4.9B tokens; config/train_gpt2.py says
# how to keep the global batch on another number of GPUs.
from config.train_gpt2_large import *  # noqa: F403

out_dir = "out-scratch_gpt2_large_18"
wandb_run_name = "scratch_gpt2_large_18"
n_layer = 18
