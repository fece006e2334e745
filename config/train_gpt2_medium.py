# GPT-2 medium (350M: 24 layers, 16 heads, width 1024) on OpenWebText with the Inheritune paper's setup,
# which config/train_gpt2.py holds; only the shape and the per-GPU micro-batch differ.
#   python data/openwebtext/prepare.py
#   torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_medium.py
from config.train_gpt2 import *  # noqa: F403

out_dir = "out-gpt2_medium"
wandb_run_name = "train_gpt2_medium"

n_layer = 24
n_head = 16
n_embd = 1024

batch_size = 8  # per GPU; lower it (and raise gradient_accumulation_steps) if it does not fit
gradient_accumulation_steps = 60  # over all GPUs: keeps the global batch at 480 sequences
