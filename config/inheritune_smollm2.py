# The real-model demo (make demo): students of SmolLM2-135M-Instruct (30 layers, a GGUF fetched by
# `make smollm2`) trained on Shakespeare in SmolLM2's own tokens, on a budget that fits 2 CPU cores.
#   make smollm2
#   python data/shakespeare/prepare.py --tokenizer models/SmolLM2-135M-Instruct.Q4_1.gguf \
#       --out_dir data/shakespeare-smollm2
#   python train.py config/inheritune_smollm2.py      # its first 14 layers (analyze.py's suggestion)
out_dir = "out-smollm2/inheritune"
data_dir = "data/shakespeare-smollm2"
init_from = "inherit"
inherit_from = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
n_layer = 14
n_head = 9  # the reference's width: a student inherits it
n_embd = 576

eval_interval = 20
eval_iters = 8
log_interval = 5

block_size = 128
batch_size = 4
gradient_accumulation_steps = 2
learning_rate = 3e-4  # the students continue trained weights: a fresh warmup to a modest peak
max_iters = 60  # 61,440 tokens a student
lr_decay_iters = 60
warmup_iters = 6
min_lr = 3e-5
weight_decay = 0.1
dtype = "bfloat16"  # autocast: 2,121 ms a step where float32 takes 3,408 (2 cores with AVX512-BF16; README)
device = "cpu"
compile = False
