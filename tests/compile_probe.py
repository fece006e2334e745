"""train.py with torch.compile's backend swapped for one that counts the graphs it is given: dynamo and AOT
autograd as in a compiled run (the same graphs, guards and recompiles), without inductor's code generation,
which takes minutes on a CPU. Run as train.py is (`torchrun ... tests/compile_probe.py --key=value ...`);
the master process prints the counts as its last line, in JSON: the graphs dynamo captured and its graph
breaks, and what AOT autograd compiled of them (under DDP, dynamo's DDPOptimizer splits a graph at the gradient
buckets' boundaries, each part compiled on its own).
"""

import functools
import json
import os
import sys
from collections import Counter
from pathlib import Path

import torch
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.utils import counters
from torch._functorch.aot_autograd import make_boxed_func

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train  # noqa: E402

COMPILED: Counter = Counter()


def counting(kind: str):
    def compiler(graph: torch.fx.GraphModule, example_inputs: list) -> object:
        COMPILED[kind] += 1
        return make_boxed_func(graph.forward)

    return compiler


BACKEND = aot_autograd(
    fw_compiler=counting("forward"), bw_compiler=counting("backward"), inference_compiler=counting("inference")
)

if __name__ == "__main__":
    torch.compile = functools.partial(torch.compile, backend=BACKEND)
    code = train.main(sys.argv[1:])
    if code == 0 and os.environ.get("RANK", "0") == "0":
        dynamo = {"graphs": counters["stats"]["unique_graphs"], "graph_breaks": sum(counters["graph_break"].values())}
        print(json.dumps(dict(COMPILED) | dynamo))
    sys.exit(code)
