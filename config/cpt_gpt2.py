# Continual pre-training (CPT, arXiv 2407.02118): GPT-2 (124M) continued on a new domain with a fresh AdamW and
# schedule, here the Python standard library's sources (a new "language", 15M tokens). The original domain
# is evaluated at every eval and not trained on (0% replay), so metrics.jsonl's val_losses show forgetting.
#   python data/python/prepare.py && python data/openwebtext/prepare.py
#   torchrun --standalone --nproc_per_node=8 train.py config/cpt_gpt2.py
# Your own GPT-2 instead of OpenAI's: init_from = "out-gpt2/ckpt.pt"; the tokens it was trained on (D_p) are
# then read from its checkpoint. Replay: config/cpt_gpt2_replay5.py and config/cpt_gpt2_replay30.py.
out_dir = "out-cpt-gpt2"
init_from = "gpt2"
init_tokens_seen = 0  # D_p, recorded for scaling.py; OpenAI has not published GPT-2's token count
data_dir = "data/python"
eval_data_dirs = "data/openwebtext"
wandb_log = False
wandb_run_name = "cpt_gpt2"

block_size = 1024
dropout = 0.0
batch_size = 8  # per GPU
gradient_accumulation_steps = 8  # over all GPUs: 64 x 1024 = 65,536 tokens per step

# 1,000 steps = 66M tokens, about 4 epochs of the 15M-token corpus.
learning_rate = 3e-4
min_lr = 3e-5
max_iters = 1000
lr_decay_iters = 1000
warmup_iters = 100
weight_decay = 0.1
grad_clip = 1.0

eval_interval = 100
eval_iters = 50
log_interval = 10
dtype = "bfloat16"
compile = True
