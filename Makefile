# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-quick bench-deps clean

# The CPU torch wheel is pinned through constraints.txt; an unpinned torch
# would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,examples]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/mnist.py

test: $(STAMP)
	$(VENV)/bin/ruff check src tests examples benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests examples benchmarks
	$(VENV)/bin/mypy

# Ray Tune is a benchmark-only dependency (benchmarks/vs_ray_tune.py): the bench extra.
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,examples,bench]"
	touch $(BENCH_STAMP)

bench-deps: $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) benchmarks/toy_figure.py
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/supervised_schedule.py
	$(PY) benchmarks/search_quality.py
	$(PY) benchmarks/knowledge_sharing.py
	$(PY) benchmarks/nas_mixing.py
	$(PY) benchmarks/chaos.py
	$(PY) benchmarks/vs_ray_tune.py
	$(PY) benchmarks/pb2.py
	$(PY) benchmarks/pb2.py --member cartpole:CartPoleMember --steps 120 --ready-every 10 \
		--name pb2_cartpole
	$(PY) benchmarks/scale.py
	$(PY) benchmarks/scale_backends.py
	$(PY) benchmarks/rl_cartpole.py
	$(PY) benchmarks/translation_bleu.py
	$(PY) benchmarks/gan.py
	$(PY) benchmarks/vectorized.py
	$(PY) benchmarks/import_time.py
	$(PY) benchmarks/make_table.py

bench-quick: $(BENCH_STAMP)
	$(PY) benchmarks/toy_figure.py --quick
	$(PY) benchmarks/overhead.py --quick
	$(PY) benchmarks/supervised_schedule.py --quick
	$(PY) benchmarks/search_quality.py --quick
	$(PY) benchmarks/knowledge_sharing.py --quick
	$(PY) benchmarks/nas_mixing.py --quick
	$(PY) benchmarks/chaos.py --quick
	$(PY) benchmarks/vs_ray_tune.py --quick
	$(PY) benchmarks/pb2.py --quick
	$(PY) benchmarks/pb2.py --quick --member cartpole:CartPoleMember --steps 20 --ready-every 5 \
		--name pb2_cartpole
	$(PY) benchmarks/scale.py --quick
	$(PY) benchmarks/scale_backends.py --quick
	$(PY) benchmarks/rl_cartpole.py --quick
	$(PY) benchmarks/translation_bleu.py --quick
	$(PY) benchmarks/gan.py --quick
	$(PY) benchmarks/vectorized.py --quick
	$(PY) benchmarks/import_time.py --quick

clean:
	rm -rf $(VENV) runs .pytest_cache
