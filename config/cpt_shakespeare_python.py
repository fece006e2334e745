# make demo-cpt: the Shakespeare reference of config/train_shakespeare.py (8 layers, width 128) continued on
# the Python standard library's sources with no replay, Shakespeare evaluated at every eval (forgetting).
# Same model shape, batch and schedule as config/scratch_python.py, the same model from scratch.
#   python data/python/prepare.py && python train.py config/cpt_shakespeare_python.py
from config.train_shakespeare import *  # noqa: F403  (model shape, batch, schedule)

out_dir = "out-cpt/replay0"
init_from = "out-shakespeare/ckpt.pt"
data_dir = "data/python"
eval_data_dirs = "data/shakespeare"
max_iters = 150
lr_decay_iters = 150
warmup_iters = 15
eval_interval = 25
eval_iters = 8
