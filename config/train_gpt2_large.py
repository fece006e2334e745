# GPT-2 large (774M: 36 layers, 20 heads, width 1280) on OpenWebText with the Inheritune authors' setup,
# which config/train_gpt2.py holds (49,152 tokens per step, 100K steps); only the shape differs.
#   python data/openwebtext/prepare.py
#   torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_large.py
from config.train_gpt2 import *  # noqa: F403

out_dir = "out-gpt2_large"
wandb_run_name = "train_gpt2_large"

n_layer = 36
n_head = 20
n_embd = 1280
