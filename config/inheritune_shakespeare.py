# Inheritune on the embedded corpus: a 4-layer student of the 8-layer reference of
# config/train_shakespeare.py (train that first), trained on the same data for the same steps.
#   python train.py config/inheritune_shakespeare.py
from config.train_shakespeare import *  # noqa: F403  (same data, model width, schedule and steps)

out_dir = "out-demo/inheritune"
init_from = "inherit"
inherit_from = "out-shakespeare/ckpt.pt"
n_layer = 4
