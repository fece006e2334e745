# GPT-2 large (774M: 36 layers, 20 heads, width 1280) on OpenWebText with the Inheritune paper's setup,
# which config/train_gpt2.py holds; only the shape and the per-GPU micro-batch differ.
#   python data/openwebtext/prepare.py
#   torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_large.py
from config.train_gpt2 import *  # noqa: F403

out_dir = "out-gpt2_large"
wandb_run_name = "train_gpt2_large"

n_layer = 36
n_head = 20
n_embd = 1280

batch_size = 6  # per GPU; lower it (and raise gradient_accumulation_steps) if it does not fit
gradient_accumulation_steps = 80  # over all GPUs: keeps the global batch at 480 sequences
