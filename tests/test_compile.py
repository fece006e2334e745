"""torch.compile in training, pinned by what dynamo and AOT autograd are given to compile (tests/compile_probe.py
counts them, without inductor's code generation): each block's forward is one graph that serves every layer,
whatever its inverse-layer attention scale, compiled before FSDP wraps the blocks, with its backward compiled
too, and nothing recompiled after the first training step."""

import json
import subprocess

import pytest

from configurator import TrainConfig
from tests.conftest import ROOT, tiny_values
from tests.test_fsdp import ENV, TORCHRUN
from tests.test_train import as_args


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_one_block_graph_serves_every_layer_and_training_compiles_its_backward(shakespeare_dir, tmp_path, parallel):
    # 3 layers scaled by 1, 1/2, 1/3; evals (no_grad, their own graphs) at steps 0, 2 and 4 around the training.
    values = dict(compile=True, n_layer=3, scale_attn_by_inverse_layer_idx=True, parallel=parallel, backend="gloo")
    values |= dict(max_iters=4, lr_decay_iters=4, eval_interval=2, eval_iters=1, out_dir=str(tmp_path / "out"))
    cfg = TrainConfig(**tiny_values(shakespeare_dir) | values)
    cmd = [*TORCHRUN, "--standalone", "--nproc_per_node=2", "tests/compile_probe.py", *as_args(cfg)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    compiled = json.loads(result.stdout.strip().splitlines()[-1])
    # The block and the head with its loss: a training graph each, with its backward, and an eval graph each.
    assert compiled["graphs"] == 4 and compiled["graph_breaks"] == 0
    assert compiled["inference"] == 2 and compiled["backward"] == compiled["forward"] >= 2
