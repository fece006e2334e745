"""Compatibility: every rule that reads a format older than the one this project writes, or nanoGPT's.

Each rule is one function, called at the one point where such data comes in (a checkpoint's dict, a run's
config.json, a base fit.json), so the rest of the code sees only the current format. Its docstring says what
it reads, since when that is old, and where it is called ("Called in:", checked by tests/test_compat.py).
A rule whose data no longer exists can be removed with its call. Of the project this module imports only
model.py and configurator.py (which imports neither it nor checkpoint.py), inside the rules that need them.
torch and model.py are imported inside the rules of checkpoints: runs.py and scaling.py, which read run folders
and fits through this module, start without torch.
"""

from __future__ import annotations

from dataclasses import fields

# nanoGPT's default vocab_size: GPT-2's 50,257 tokens padded to a multiple of 64. A nanoGPT checkpoint that
# records it holds a GPT-2 vocabulary, and its last 47 rows are padding.
NANOGPT_PADDED_GPT2_VOCAB = 50304
# Keys this project's configs had until inherit_parts replaced them (2026-11-23, 4b1467f).
RETIRED_CONFIG_KEYS = {"inherit_embeddings", "inherit_ln_f"}


def checkpoint_state(state: dict) -> dict:
    """A checkpoint file's dict in the current names: `init` (this project's checkpoints before 2026-12-03,
    f749db2) is `continued_from`, and nanoGPT's best_val_loss, the tensor of its loss estimate, a float.
    Called in: checkpoint.py (Checkpoint.load)."""
    import torch

    state = dict(state)
    if "init" in state:
        state["continued_from"] = state.pop("init")
    if isinstance(state.get("best_val_loss"), torch.Tensor):
        state["best_val_loss"] = state["best_val_loss"].item()
    return state


def model_args(args: dict) -> dict:
    """A checkpoint's model_args as GPTConfig takes them: without `padded_vocab_size` (this project's first
    checkpoints recorded the derived padding, until 2026-11-23, 4b1467f), and with nanoGPT's GPT-2
    vocab_size of 50,304 (its 50,257 tokens padded) as the 50,257 that exist: the model pads them again, so
    the 50,304 rows of its weights load as they are.
    Called in: checkpoint.py (Checkpoint.load)."""
    from model import GPT2_VOCAB

    args = {k: v for k, v in args.items() if k != "padded_vocab_size"}
    if args.get("vocab_size") == NANOGPT_PADDED_GPT2_VOCAB:
        args["vocab_size"] = GPT2_VOCAB
    return args


def tokens_from_config(config: dict | None, iter_num: int, per_step_otherwise: int | None = None) -> int | None:
    """The tokens of a run whose checkpoint does not count them (nanoGPT's, and this project's before
    2026-12-03, b7a49bf): steps x tokens per step, where the config is one train.py reads (its current keys,
    or retired ones), whose gradient_accumulation_steps counts the micro-batches of all processes. Another
    config (LLM-Inheritune's script holds a per-GPU count and not the number of GPUs) gives steps x
    per_step_otherwise, or None where that is not given.
    Called in: checkpoint.py (Checkpoint.tokens_from_config)."""
    from configurator import DATASET, TrainConfig  # here: configurator.py reads configs through this module too

    train_keys = {f.name for f in fields(TrainConfig)} | {DATASET}  # DATASET: nanoGPT's name, recorded too
    per_step_keys = {"batch_size", "gradient_accumulation_steps", "block_size"}
    if config and per_step_keys <= config.keys() <= {*train_keys, *RETIRED_CONFIG_KEYS}:
        return iter_num * config["batch_size"] * config["gradient_accumulation_steps"] * config["block_size"]
    return None if per_step_otherwise is None else iter_num * per_step_otherwise


def run_record(record: dict) -> dict:
    """A run's config.json in the current names and forms: run folders written before 2026-12-03 (f749db2)
    named `continued_from` `init`, and the model's `scaling_params` `non_embedding_params`; those written before
    the config was grouped (2026-12-07, 3433320) hold eval_data_dirs as a comma string, not a list.
    Called in: runs.py (read_run)."""
    if "init" in record:
        record = {**record, "continued_from": record["init"]}
        del record["init"]
        model = dict(record["model"])
        model["scaling_params"] = model.pop("non_embedding_params", None)
        record = {**record, "model": model}
    held_out = record["config"].get("eval_data_dirs")
    if isinstance(held_out, str):  # split as the old config's held_out property split it
        folders = [path.strip() for path in held_out.split(",") if path.strip()]
        record = {**record, "config": {**record["config"], "eval_data_dirs": folders}}
    return record


def fit(base: dict) -> dict:
    """A fit.json of scaling.py fit in the current form: fits before 2026-12-03 said what their points leave
    undetermined in `warnings` (now `unconstrained`, since 1166476) and recorded points without their run
    (since c619488), which are taken as one run each.
    Called in: scaling.py (read_base)."""
    base = dict(base)
    if "unconstrained" not in base:
        base["unconstrained"] = base.get("warnings", [])
    if "points" in base:
        base["points"] = [{"run": i, **point} for i, point in enumerate(base["points"])]
    return base
