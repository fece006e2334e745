# Baseline for config/inheritune_gpt2_xl_24.py: the 24-layer model from scratch for twice the steps.
# 200K steps x 49,152 tokens per step (48 sequences x 1024) = 9.8B tokens; config/train_gpt2.py says
# how to keep the global batch on another number of GPUs.
from config.train_gpt2_xl import *  # noqa: F403

out_dir = "out-scratch_gpt2_xl_24_2x"
wandb_run_name = "scratch_gpt2_xl_24_2x"
n_layer = 24
max_iters = 200000
lr_decay_iters = 200000
