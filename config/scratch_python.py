# make demo-cpt: the baseline of config/cpt_shakespeare_python.py, the same model from scratch on Python,
# and the base of the demo's scaling sweep (python scaling.py sweep --config config/scratch_python.py ...).
from config.cpt_shakespeare_python import *  # noqa: F403

out_dir = "out-cpt/scratch"
init_from = "scratch"
