# The first Inheritune paper's low-data headline: a 13-layer, 1.82B student of OpenLLaMA-3B (26 layers, width
# 3200, 32 heads), trained on a 1B-token RedPajama subset on one GPU, with the authors' settings (their
# LLM-Inheritune lit-gpt/Training/train.py): AdamW with its default betas (0.9, 0.999), lr 3e-4 after 1,000
# warmup steps and then constant, weight decay 0.01 on every parameter (their AdamW call takes them all, norm
# gains included: decay_1d_params below), no gradient clipping, bf16, batch 8 sequences x 2048
# (micro-batch 1, 8 accumulation steps) = 16,384 tokens per step.
#   python data/redpajama/prepare.py --input /data/redpajama-sample --max_tokens 1_000_000_000 \
#       --tokenizer openlm-research/open_llama_3b --out_dir data/redpajama
#   python train.py config/inheritune_openllama_3b_13.py
# Steps: the authors' run took 191,000 micro-batches = 23,875 steps = 391M tokens, 0.39 of an epoch of the 1B
# subset; an epoch is 61,035 steps, and the paper's 8 epochs are max_iters = 488,281.
# Sweep n with n_layer or inherit_layers, or with the growth loop; a hub reference records no val loss, so give
# the target, e.g. the reference's own loss on this data (evaluation.py loss --model openlm-research/open_llama_3b):
#   python grow.py --inherit_from openlm-research/open_llama_3b --config config/inheritune_openllama_3b_13.py \
#       --target LOSS
out_dir = "out-inheritune-openllama-3b-13"
init_from = "inherit"
inherit_from = "openlm-research/open_llama_3b"  # or a local folder of it
n_layer = 13
n_head = 32  # the reference's width: checked against it
n_embd = 3200
# Everything by default. The authors' run exactly takes three more settings; uncomment them to reproduce it:
inherit_parts = "all"
# inherit_parts = "head,attn,mlp,ln"  # their code copies the blocks and the head; wte and the final norm stay fresh
# fresh_embedding_std = 1.0  # and that fresh wte is nn.Embedding's N(0, 1), not GPT-2's N(0, 0.02)
# seed = 5000  # theirs is 5000 + rank; here batches are drawn by index in the global batch, so one seed serves all
# Precision: their script (train.py's setup) takes bf16-mixed on one device, as this run: float32 weights under
# bf16 autocast, dtype = "bfloat16" below. With more than one device it switches to FSDP and bf16-true; theirs then:
# parallel = "fsdp"; dtype = "bf16-true"  # 8 bytes per parameter instead of 16 (docs/scale.md)
data_dir = {
    "data/redpajama/arxiv": 2.5,
    "data/redpajama/book": 4.5,
    "data/redpajama/c4": 15.0,
    "data/redpajama/cc": 67.0,
    "data/redpajama/github": 4.5,
    "data/redpajama/stackexchange": 2.0,
    "data/redpajama/wikipedia": 4.5,
}

block_size = 2048
batch_size = 1  # per GPU
gradient_accumulation_steps = 8
learning_rate = 3e-4
min_lr = 3e-4  # constant after the warmup, as the authors'
warmup_iters = 1000
max_iters = 23875
lr_decay_iters = 23875
weight_decay = 0.01
decay_1d_params = True  # their AdamW call decays every parameter, norm gains included
beta1 = 0.9
beta2 = 0.999
grad_clip = 0.0

eval_interval = 1000
eval_iters = 100
log_interval = 10
dtype = "bfloat16"
compile = True
# Recompute each block in the backward pass: the activations of one block at a time, for one more forward pass
# (a third more arithmetic). Weights, gradients and AdamW state of the 1.82B student take 16 bytes per
# parameter: 29 GB, which a 48 GB GPU (the authors' A6000) holds.
gradient_checkpointing = True
