# GPT-2 xl (1.5B: 48 layers, 25 heads, width 1600) on OpenWebText with the Inheritune authors' setup,
# which config/train_gpt2.py holds (49,152 tokens per step, 100K steps); only the shape and the micro-batch differ.
#   python data/openwebtext/prepare.py
#   torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_xl.py
from config.train_gpt2 import *  # noqa: F403

out_dir = "out-gpt2_xl"
wandb_run_name = "train_gpt2_xl"

n_layer = 48
n_head = 25
n_embd = 1600

# Half the others' micro-batch, for half their activation memory: xl's weights, gradients and AdamW state
# alone take 25 GB (16 bytes per parameter). Where memory allows, 6 x 8 trains the same global batch.
batch_size = 3  # per GPU
gradient_accumulation_steps = 16  # over all GPUs: 3 x 16 = 48 sequences per step, as the authors'
