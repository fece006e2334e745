# config/cpt_gpt2.py with 5% replay: every batch row comes from the original corpus with probability 0.05,
# which protects what GPT-2 knew (the CPT paper: without replay its source-language loss rose from 2.40 to 3.68).
# The val loss is then the mixture's weighted mean; metrics.jsonl's val_losses has each corpus's own.
#   torchrun --standalone --nproc_per_node=8 train.py config/cpt_gpt2_replay5.py
from config.cpt_gpt2 import *  # noqa: F403

out_dir = "out-cpt-gpt2-replay5"
wandb_run_name = "cpt_gpt2_replay5"
data_dir = {"data/python": 0.95, "data/openwebtext": 0.05}
eval_data_dirs = ""  # the original corpus is trained on, and so evaluated
