"""Evaluate checkpoints: export to Hugging Face, loss on any corpus, zero-shot tasks, a side-by-side table.

    python evaluation.py export --model out-student/ckpt.pt --out hf-student
    python evaluation.py loss --model out-student/ckpt.pt --data data/openwebtext --out results/student-loss.json
    python evaluation.py tasks --model out-student/ckpt.pt --out results/student-tasks.json
    python evaluation.py table reference=results/ref-tasks.json student=results/student-tasks.json

`--model` accepts every model source (checkpoint.load_model): this project's checkpoints, nanoGPT
checkpoints, Hugging Face GPT-2 (`gpt2`, `gpt2-medium`, ...) or Llama-family models (a hub id or a local
folder). `export` writes GPT-2 as GPT2LMHeadModel and the Llama family as Llama/Qwen2. `tasks` runs
lm-evaluation-harness (optional: `pip install "lm_eval[hf]"`) on the exported model; the paper reports acc
on ARC-Easy, PIQA, SciQ and LAMBADA and acc_norm on HellaSwag.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import socket
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

from checkpoint import CheckpointError, load_model, source_sha256
from data.format import open_tokens
from data.tokenizer import (
    EOT_TOKEN,
    VOCAB_SIZE,
    check_corpus_tokenizer,
    hf_tokenizer_name,
    load_hf_tokenizer,
    save_hf_tokenizer,
)
from hf import to_hf
from model import GPT
from runtime import (
    UserError,
    autocast_context,
    output_file,
    output_folder,
    resolve_device_name,
    resolve_dtype,
    run_command,
    write_json,
)

MODEL_HELP = "checkpoint path (ours or nanoGPT's), gpt2[-medium|-large|-xl], a Hugging Face folder or hub id, a GGUF"
PAPER_TASKS = "arc_easy,piqa,sciq,hellaswag,lambada_openai"
NORMALISED_TASKS = ("hellaswag",)  # scored by acc_norm in the paper (length-normalised likelihood)

# ----------------------------------------------------------------------------- export


def export(source: str, out: Path) -> None:
    """A Hugging Face folder (GPT-2, or the Llama family's), its tokenizer's files, and inheritune.json with
    where it came from. The tokenizer is the one the model was trained with: GPT-2's, built offline, or the
    Hugging Face tokenizer its checkpoint records (its reference's) or its own folder carries."""
    model, ckpt = load_model(source)
    name = hf_tokenizer_name(ckpt.tokenizer)
    if not name and model.config.vocab_size != VOCAB_SIZE:
        raise CheckpointError(f"{source}: no Hugging Face tokenizer is known for its {model.config.vocab_size} tokens")
    tokenizer = load_hf_tokenizer(name) if name else None  # before anything is written: it may be gone
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
        to_hf(model, tokenizer.eos_token_id, tokenizer.bos_token_id).save_pretrained(out)
    else:
        save_hf_tokenizer(out, model.config.block_size)
        to_hf(model, EOT_TOKEN).save_pretrained(out)
    origin = {
        "source": str(source),
        "sha256": source_sha256(source),
        "iter_num": ckpt.iter_num,
        "best_val_loss": ckpt.best_val_loss,
        "inherit": ckpt.inherit,
        "continued_from": ckpt.continued_from,
        "dequantized": ckpt.dequantized,
    }
    write_json(out / "inheritune.json", origin)


def export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--out", required=True, help="folder: config.json, model.safetensors, tokenizer files")


def export_main(args: argparse.Namespace) -> int:
    export(args.model, output_folder(args.out))
    print(f"wrote {args.out}: AutoModelForCausalLM.from_pretrained({args.out!r}) and AutoTokenizer load it")
    return 0


# ----------------------------------------------------------------------------- loss


def int_at_least(minimum: int):
    """An argparse type: an integer of at least `minimum` (argparse's one-line error otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def windows(tokens: np.ndarray, block_size: int) -> list[tuple[int, int]]:
    """(start, length) of consecutive windows that predict every token after the first exactly once."""
    predicted = len(tokens) - 1
    return [(start, min(block_size, predicted - start)) for start in range(0, predicted, block_size)]


def batch_sum_loss(model: GPT, x: torch.Tensor, y: torch.Tensor, ctx) -> float:
    """Sum of the per-token cross-entropies of a batch (the mean that train.py reports, times its size)."""
    with ctx:
        _, loss = model(x, y)
    return loss.float().item() * y.numel()


def corpus_loss(
    model: GPT, tokens: np.ndarray, batch_size: int, device: torch.device, dtype: torch.dtype
) -> dict[str, float]:
    """Token-weighted mean next-token loss over `tokens`, in order, deterministic."""
    if len(tokens) < 2:
        raise UserError(f"{len(tokens)} tokens: need at least 2 to predict one")
    ctx = autocast_context(device, dtype)
    total, count = 0.0, 0
    spans = windows(tokens, model.config.block_size)
    by_length: dict[int, list[int]] = {}
    for start, length in spans:  # the last window may be shorter; batch it with its own kind
        by_length.setdefault(length, []).append(start)
    for length, starts in by_length.items():
        for i in range(0, len(starts), batch_size):
            buf = np.stack([tokens[s : s + length + 1] for s in starts[i : i + batch_size]]).astype(np.int64)
            if buf.max() >= model.config.vocab_size:  # checked per batch: one pass over a large split, not two
                vocab = model.config.vocab_size
                raise UserError(f"token id {buf.max()} is outside the model's vocabulary of {vocab}")
            t = torch.from_numpy(buf).to(device)
            total += batch_sum_loss(model, t[:, :-1], t[:, 1:], ctx)
            count += t[:, 1:].numel()
    return {"loss": total / count, "perplexity": math.exp(total / count), "tokens": count}


def loss_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--data", required=True, help="prepared corpus folder")
    p.add_argument("--split", default="val")
    p.add_argument("--max_tokens", type=int_at_least(0), default=0, help="only the split's first N tokens (0: all)")
    p.add_argument("--batch_size", type=int_at_least(1), default=8)
    p.add_argument("--device", default="auto", help="'auto' (cuda if available), 'cpu', 'cuda', ...")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="float32 is exact")
    p.add_argument("--out", default="", help="also write the result as JSON here")


def loss_main(args: argparse.Namespace) -> int:
    if args.out:
        output_file(args.out)
    device = torch.device(resolve_device_name(args.device))
    model, ckpt = load_model(args.model, device)
    check_corpus_tokenizer(Path(args.data), ckpt.vocabulary())
    tokens = open_tokens(Path(args.data), args.split)
    tokens = tokens[: args.max_tokens + 1] if args.max_tokens > 0 else tokens
    dtype = resolve_dtype(args.dtype, device)
    result = corpus_loss(model.eval(), tokens, args.batch_size, device, dtype)
    span = {"split": args.split, "max_tokens": args.max_tokens or None}  # None: the whole split
    result = {"model": args.model, "data": os.path.normpath(args.data)} | span | result
    print(
        f"{args.model} on {args.data}/{args.split}.bin: loss {result['loss']:.4f}, "
        f"perplexity {result['perplexity']:.2f} over {result['tokens']:,} tokens"
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, result)
    return 0


# ----------------------------------------------------------------------------- tasks


def offline_by_setting() -> bool:
    flags = (os.environ.get(v, "0").lower() for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(flag not in ("0", "", "false") for flag in flags)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers at all, decided in seconds instead of minutes of retries."""
    if offline_by_setting():
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def task_errors(names: list[str], task_manager) -> list[str]:
    """Why each task that cannot be loaded cannot be, e.g. its data set is on the hub and we are offline."""
    errors = []
    for name in names:
        if name not in task_manager.all_tasks:
            errors.append(f"task {name}: unknown to lm-evaluation-harness (and not in --include_path)")
            continue
        try:
            task_manager.load([name])
        except Exception as e:  # lm_eval and datasets raise many types for missing data
            errors.append(
                f"task {name}: its data cannot be loaded ({type(e).__name__}: {str(e)[:200]}). Offline, "
                "provide it locally: a task YAML with `dataset_path: json` and `dataset_kwargs: {data_files: ...}` "
                "in a folder passed as --include_path (example: tests/lm_eval_tasks/)"
            )
    return errors


def primary_metric(task: str, metrics: dict[str, float]) -> str | None:
    """The figure the paper reports for a task: acc_norm for HellaSwag, acc where there is one, else
    perplexity, else its first; None for a task without figures (a group that aggregates nothing)."""
    preferred = ("acc_norm",) if task.startswith(NORMALISED_TASKS) else ()
    for metric in (*preferred, "acc", "word_perplexity", "perplexity"):
        if metric in metrics:
            return metric
    return next(iter(metrics), None)


def reported_metrics(output: dict) -> dict[str, dict[str, float]]:
    """Every task lm-eval reports, the members of each tag and group asked for and the groups themselves
    (their aggregate, where their YAML asks for one): metric name -> value, its filter and stderr left out."""
    return {
        task: {
            key.split(",")[0]: value
            for key, value in entries.items()
            if "," in key and "stderr" not in key and isinstance(value, int | float)
        }
        for task, entries in output["results"].items()
    }


@functools.cache
def task_index(include_path: str):
    """lm-eval's TaskManager: its index of every task, built once per process, as it reads thousands of YAML
    files (6 s here); recipe.py checks the tasks up front and then scores each model on them."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise UserError('evaluation.py tasks needs lm-evaluation-harness: pip install "lm_eval[hf]"') from e
    return TaskManager(include_path=include_path or None)


def loadable_tasks(names: list[str], include_path: str):
    """lm-eval's task manager, once every task asked for is known and its data loads (else UserError)."""
    if not hub_reachable():
        # Set before lm_eval imports datasets: then a task whose data is not cached fails at once.
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    task_manager = task_index(include_path)
    errors = task_errors(names, task_manager)
    if errors:
        raise UserError("\n".join(errors))
    return task_manager


def run_tasks(
    source: str, names: list[str], include_path: str, limit: int | None, batch_size: int, device: str
) -> dict:
    task_manager = loadable_tasks(names, include_path)
    import lm_eval

    with tempfile.TemporaryDirectory() as folder:
        export(source, Path(folder))
        output = lm_eval.simple_evaluate(
            model="hf",
            model_args={"pretrained": folder, "dtype": "float32"},
            tasks=names,
            task_manager=task_manager,
            limit=limit,
            batch_size=batch_size,
            device=device,
            log_samples=False,
        )
    tasks, groups = reported_metrics(output), output.get("group_subtasks") or {}
    return {"model": source, "limit": limit, "lm_eval": lm_eval.__version__, "tasks": tasks, "groups": groups}


def task_columns(rows: dict[str, dict]) -> list[tuple[str, str]]:
    """(task, metric) of each column: the paper's metric of every task, and its perplexity as well where
    the task has both (LAMBADA: acc and perplexity)."""
    columns = []
    for r in rows.values():
        for task, metrics in r.get("tasks", {}).items():
            metric = primary_metric(task, metrics)
            if metric is None:
                continue
            columns += [(task, metric)] + (
                [(task, "perplexity")] if metric != "perplexity" and "perplexity" in metrics else []
            )
    return list(dict.fromkeys(columns))


def format_task_table(rows: dict[str, dict]) -> str:
    """Markdown: one row per model, its losses where known (a column per corpus and split), each task's
    figures, and the mean accuracy of its tasks (a group's aggregate is shown, not counted again beside its
    members)."""
    columns = task_columns(rows)
    groups = {group for r in rows.values() for group in r.get("groups", {})}
    losses = list(dict.fromkeys(label for r in rows.values() for label in r.get("losses", {})))
    has_acc = any(metric.startswith("acc") for _, metric in columns)
    header = ["model", *losses, *(f"{t} ({m})" for t, m in columns)]
    header += ["avg acc"] if has_acc else []
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, r in rows.items():
        cells = [name, *(f"{r['losses'][label]:.4f}" if label in r.get("losses", {}) else "" for label in losses)]
        accs = []
        for task, metric in columns:
            value = r.get("tasks", {}).get(task, {}).get(metric)
            if value is None:
                cells.append("")
            elif metric.startswith("acc"):
                cells.append(f"{100 * value:.2f}")
                accs += [] if task in groups else [value]
            else:
                cells.append(f"{value:.2f}")
        cells += [f"{100 * sum(accs) / len(accs):.2f}" if accs else ""] if has_acc else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tasks_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--tasks", default=PAPER_TASKS, help="comma-separated lm-eval task names")
    p.add_argument("--limit", type=int_at_least(1), help="only the first K examples of each task (a quick look)")
    p.add_argument("--include_path", default="", help="folder of extra task YAMLs, e.g. tasks on local data")
    p.add_argument("--batch_size", type=int_at_least(1), default=8)
    p.add_argument("--device", default="auto", help="'auto' (cuda if available), 'cpu', 'cuda', ...")
    p.add_argument("--out", default="", help="JSON of the results (default: beside the checkpoint)")


def tasks_main(args: argparse.Namespace) -> int:
    names = [t for t in args.tasks.split(",") if t]
    out = output_file(args.out or Path(args.model).with_suffix(".tasks.json"))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)  # before the evaluation: a folder that cannot be made fails now
    except OSError as e:
        raise UserError(f"cannot write {out}: {e}") from e
    device = resolve_device_name(args.device)
    result = run_tasks(args.model, names, args.include_path, args.limit, args.batch_size, device)
    write_json(out, result)  # first: hours of evaluation are on disk before anything else can fail
    print(format_task_table({args.model: result}))
    print(f"wrote {out}")
    return 0


# ----------------------------------------------------------------------------- table


def table_arguments(p: argparse.ArgumentParser) -> None:
    results_help = "NAME=FILE.json from the `tasks` or `loss` command (repeat a NAME to join its loss and its tasks)"
    p.add_argument("results", nargs="+", help=results_help)
    p.add_argument("--out", default="", help="also write the markdown table here")


def loss_label(record: dict) -> str:
    """A loss column's name: its split, corpus and span, as `loss` records them ("val loss (data/openwebtext)",
    "val loss (data/openwebtext, first 1,000 tokens)"): losses over other tokens never share a column."""
    if "split" not in record or "data" not in record:
        return "loss"
    span = f", first {record['max_tokens']:,} tokens" if record.get("max_tokens") else ""
    return f"{record['split']} loss ({os.path.normpath(record['data'])}{span})"


def named_path(item: str) -> tuple[str, Path]:
    """NAME=FILE split at the first '=' (as runs.py reads NAME=DIR); a FILE alone, even one whose path holds
    an '=', is named by its stem."""
    name, sep, path = item.partition("=")
    if not sep or Path(item).is_file():
        return Path(item).stem, Path(item)
    return name, Path(path)


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_result(record) -> bool:
    """Whether a JSON is `loss`'s (a numeric loss) or `tasks`' (task -> metric -> number)."""
    if not isinstance(record, dict) or not ({"loss", "tasks"} & record.keys()):
        return False
    tasks = record.get("tasks", {})
    if not isinstance(tasks, dict) or not all(isinstance(m, dict) for m in tasks.values()):
        return False
    metrics = [value for m in tasks.values() for value in m.values()]
    return all(map(is_number, metrics)) and ("loss" not in record or is_number(record["loss"]))


def join_results(items: list[str]) -> dict[str, dict]:
    """One row per NAME: the losses and tasks of all its files together; a figure given twice for one name
    (the same task, or a loss of the same split and corpus, in two files) is refused, never overwritten."""
    rows: dict[str, dict] = {}
    given: dict[tuple[str, str], Path] = {}  # (name, loss label or task) -> the file that gave it
    for item in items:
        name, path = named_path(item)
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{path}: {e}") from e
        if not is_result(record):
            raise UserError(f"{path} is not the JSON of `evaluation.py loss` or `evaluation.py tasks`")
        row = rows.setdefault(name, {"losses": {}, "tasks": {}, "groups": {}})
        figures = {loss_label(record): record["loss"]} if "loss" in record else {}
        for key, part in (("losses", figures), ("tasks", record.get("tasks", {}))):
            for figure, value in part.items():
                if (name, figure) in given:
                    raise UserError(f"{name}: {figure} is in both {given[name, figure]} and {path}")
                given[name, figure] = path
                row[key][figure] = value
        row["groups"] |= record.get("groups", {})
    return rows


def table_main(args: argparse.Namespace) -> int:
    rows = join_results(args.results)
    table = format_task_table(rows)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0


COMMANDS = {
    "export": (export_arguments, export_main, "write a model as a Hugging Face folder (GPT-2, Llama or Qwen2)"),
    "loss": (loss_arguments, loss_main, "next-token loss of a checkpoint on a corpus"),
    "tasks": (tasks_arguments, tasks_main, "zero-shot tasks with lm-evaluation-harness"),
    "table": (table_arguments, table_main, "several checkpoints' results side by side"),
}


def main(argv: list[str]) -> int:
    return run_command("evaluation.py", __doc__, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
