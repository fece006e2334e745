# GPT-2 (350M: 24 layers, 16 heads, width 1024) on OpenWebText with the Inheritune paper's setup:
# AdamW (0.9, 0.95), lr 2e-4 -> 1e-5 cosine over 100K steps, warmup 2000, weight decay 0.1, grad clip 1.0,
# block 1024, bf16, no dropout, no bias. Global batch 480 x 1024 = 491,520 tokens per step.
#   python data/openwebtext/prepare.py
#   torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_medium.py
out_dir = "out-gpt2_medium"
data_dir = "data/openwebtext"
wandb_log = True
wandb_run_name = "train_gpt2_medium"

n_layer = 24
n_head = 16
n_embd = 1024
block_size = 1024
bias = False
dropout = 0.0

batch_size = 8  # per GPU; lower it (and raise gradient_accumulation_steps) if it does not fit
gradient_accumulation_steps = 60  # over all GPUs: keeps the global batch at 480 sequences

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
