# The reference model of the embedded corpus: an 8-layer GPT-2 that trains on 2 CPU cores in about
# three minutes and learns the shape of verse (speaker names, stage directions, line breaks).
# At this width most of the compute is the 50257-token softmax, not the blocks.
#   python data/shakespeare/prepare.py && python train.py config/train_shakespeare.py
out_dir = "out-shakespeare"
data_dir = "data/shakespeare"
eval_interval = 50
eval_iters = 10
log_interval = 10

n_layer = 8
n_head = 4
n_embd = 128
block_size = 128
bias = False
dropout = 0.0

batch_size = 8
gradient_accumulation_steps = 1
learning_rate = 2e-3
max_iters = 200
lr_decay_iters = 200
warmup_iters = 20
min_lr = 2e-4
weight_decay = 0.1

device = "cpu"
compile = False
