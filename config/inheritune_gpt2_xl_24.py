# Inheritune (the authors' setup): a 24-layer student of the 48-layer GPT-2 xl reference trained by
# config/train_gpt2_xl.py, trained on the same data for the same 100K steps.
# 100K steps x 49,152 tokens per step (48 sequences x 1024) = 4.9B tokens; config/train_gpt2.py says
# how to keep the global batch on another number of GPUs.
#   torchrun --standalone --nproc_per_node=8 train.py config/inheritune_gpt2_xl_24.py
# Sweep n by editing n_layer, or let the growth loop do it:
#   python grow.py --inherit_from out-gpt2_xl/ckpt.pt --config config/inheritune_gpt2_xl_24.py --nproc 8
from config.train_gpt2_xl import *  # noqa: F403

out_dir = "out-inheritune_gpt2_xl_24"
wandb_run_name = "inheritune_gpt2_xl_24"
init_from = "inherit"
inherit_from = "out-gpt2_xl/ckpt.pt"  # or "gpt2-xl" for OpenAI's weights
bias = None  # unset: the reference's architecture (OpenAI's GPT-2s have biases and no layer-index scaling)
scale_attn_by_inverse_layer_idx = None
n_layer = 24
# Everything by default (the paper's text); the authors' code leaves wpe and ln_f fresh: "wte,attn,mlp,ln".
inherit_parts = "wte,wpe,attn,mlp,ln,ln_f"
