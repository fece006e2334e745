# GPT-2 medium (350M: 24 layers, 16 heads, width 1024) on OpenWebText with the Inheritune authors' setup,
# which config/train_gpt2.py holds (49,152 tokens per step, 100K steps); only the shape differs.
#   python data/openwebtext/prepare.py
#   torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_medium.py
from config.train_gpt2 import *  # noqa: F403

out_dir = "out-gpt2_medium"
wandb_run_name = "train_gpt2_medium"

n_layer = 24
n_head = 16
n_embd = 1024
