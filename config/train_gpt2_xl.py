# GPT-2 xl (1.5B: 48 layers, 25 heads, width 1600) on OpenWebText with the Inheritune paper's setup,
# which config/train_gpt2.py holds; only the shape and the per-GPU micro-batch differ.
#   python data/openwebtext/prepare.py
#   torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_xl.py
from config.train_gpt2 import *  # noqa: F403

out_dir = "out-gpt2_xl"
wandb_run_name = "train_gpt2_xl"

n_layer = 48
n_head = 25
n_embd = 1600

batch_size = 4  # per GPU; lower it (and raise gradient_accumulation_steps) if it does not fit
gradient_accumulation_steps = 120  # over all GPUs: keeps the global batch at 480 sequences
