# make demo-cpt: config/cpt_shakespeare_python.py with 25% replay of Shakespeare.
from config.cpt_shakespeare_python import *  # noqa: F403

out_dir = "out-cpt/replay25"
data_dir = {"data/python": 0.75, "data/shakespeare": 0.25}
eval_data_dirs = ""
