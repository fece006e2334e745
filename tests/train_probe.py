"""train.py with counters of what matters for speed on a GPU, run as train.py is (`torchrun ...
tests/train_probe.py --key=value ...`); the master process prints them as its last line, in JSON:

- what torch.compile compiles, with its backend swapped for one that counts the graphs it is given: dynamo and
  AOT autograd as in a compiled run (the same graphs, guards and recompiles), without inductor's code
  generation, which takes minutes on a CPU. `graphs` and `graph_breaks` are dynamo's; `forward`, `backward`
  and `inference` what AOT autograd compiled of them (under DDP, dynamo's DDPOptimizer splits a training graph
  at the gradient buckets' boundaries, each part compiled on its own);
- `syncs`: the host syncs of each step (reading a tensor's value, an all-reduce of train.py's own), counted
  from the start of one train_step to the start of the next: on a GPU, each makes the host wait until the
  device has run everything queued.
"""

import functools
import json
import os
import sys
from collections import Counter
from pathlib import Path

import torch
import torch.distributed as dist
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.utils import counters
from torch._functorch.aot_autograd import make_boxed_func

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train  # noqa: E402

COMPILED: Counter = Counter()
SYNCS: list[int] = []  # per step, once its train_step has started


def counting(kind: str):
    def compiler(graph: torch.fx.GraphModule, example_inputs: list) -> object:
        COMPILED[kind] += 1
        return make_boxed_func(graph.forward)

    return compiler


BACKEND = aot_autograd(
    fw_compiler=counting("forward"), bw_compiler=counting("backward"), inference_compiler=counting("inference")
)


def counting_syncs(function):
    @functools.wraps(function)
    def counted(*args, **kwargs):
        if SYNCS:
            SYNCS[-1] += 1
        return function(*args, **kwargs)

    return counted


def starting_a_step(train_step):
    @functools.wraps(train_step)
    def step(*args, **kwargs):
        SYNCS.append(0)
        return train_step(*args, **kwargs)

    return step


if __name__ == "__main__":
    torch.compile = functools.partial(torch.compile, backend=BACKEND)
    torch.Tensor.item = counting_syncs(torch.Tensor.item)
    torch.Tensor.tolist = counting_syncs(torch.Tensor.tolist)
    dist.all_reduce = counting_syncs(dist.all_reduce)
    train.train_step = starting_a_step(train.train_step)  # the name train.py calls
    code = train.main(sys.argv[1:])
    if code == 0 and os.environ.get("RANK", "0") == "0":
        dynamo = {"graphs": counters["stats"]["unique_graphs"], "graph_breaks": sum(counters["graph_break"].values())}
        print(json.dumps(dict(COMPILED) | dynamo | {"syncs": SYNCS}))
    sys.exit(code)
