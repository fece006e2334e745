# GPT-2 (124M: 12 layers, 12 heads, width 768) on OpenWebText with the Inheritune authors' setup, which the
# medium, large and xl references, their students and baselines all use (LLM-Inheritune's
# GPT2-experiments/train_iniheritune.py and config/train_gpt2_large_adam.py): AdamW (0.9, 0.95),
# lr 2e-4 -> 1e-5 cosine over 100K steps, warmup 2000, weight decay 0.1, grad clip 1.0, block 1024, bf16,
# no dropout, no bias, attention logits of layer l divided by l + 1 (scale_attn_by_inverse_layer_idx).
# One difference: their AdamW (GPT2-experiments/model.py, nanoGPT's older configure_optimizers) decays the Linear
# weights only, sparing norm gains and both embeddings (wte, tied to the head, and wpe); this project's decays the
# embeddings too (nanoGPT's groups today). decay_1d_params stays False: it would decay the norm gains as well.
#
# Global batch: 48 sequences x 1024 = 49,152 tokens per step (the authors: 3 GPUs x micro-batch 2 x 8
# accumulation steps), so 100K steps = 4.9B tokens, about half an epoch of OpenWebText's ~9B.
# To keep it on another number of GPUs, keep batch_size x gradient_accumulation_steps = 48;
# gradient_accumulation_steps counts micro-batches over ALL GPUs and must be a multiple of their number:
#   1 or 2 or 4 or 8 GPUs: batch_size 6, gradient_accumulation_steps 8 (below); 3 GPUs: 2 and 24 (the authors')
#   or 4 and 12; if a micro-batch does not fit, halve batch_size and double gradient_accumulation_steps.
#   python data/openwebtext/prepare.py
#   torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py
out_dir = "out-gpt2"
data_dir = "data/openwebtext"
wandb_log = True
wandb_run_name = "train_gpt2"

n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
bias = False
dropout = 0.0
scale_attn_by_inverse_layer_idx = True

batch_size = 6  # per GPU
gradient_accumulation_steps = 8  # over all GPUs: 6 x 8 = 48 sequences per step

learning_rate = 2e-4
min_lr = 1e-5
max_iters = 100000
lr_decay_iters = 100000
warmup_iters = 2000
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0

eval_interval = 1000
eval_iters = 200
log_interval = 10
dtype = "bfloat16"
compile = True
