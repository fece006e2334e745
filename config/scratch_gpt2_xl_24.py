# Baseline for config/inheritune_gpt2_xl_24.py: the same 24-layer model from scratch, same 100K steps.
# 100K steps x 49,152 tokens per step (48 sequences x 1024) = 4.9B tokens; config/train_gpt2.py says
# how to keep the global batch on another number of GPUs.
from config.train_gpt2_xl import *  # noqa: F403

out_dir = "out-scratch_gpt2_xl_24"
wandb_run_name = "scratch_gpt2_xl_24"
n_layer = 24
