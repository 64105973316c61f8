# seqattn: the two commands a newcomer needs.
#   make demo   run the main job (installs what it needs into .venv)
#   make test   run the test suite (installs what it needs into .venv)
#   make test-fast  ruff and the quick subset (tests not marked slow): under 3 minutes, for contributors
PY := .venv/bin/python
PYTEST := $(PY) -m pytest -q -n auto --dist loadscope

.PHONY: demo test test-fast lint setup bench clean

setup:
	bash tools/setup_env.sh test
	bash tools/install_system_deps.sh
	bash tools/install_kenlm.sh || echo "[setup] warning: KenLM could not be built; the beam-search test will skip"

demo: setup
	bash tools/demo.sh

test: setup lint
	$(PYTEST) -m "not cuda" tests  # CUDA tests: tools/gpu_check.sh on a GPU machine

test-fast: setup lint
	$(PYTEST) -m "not cuda and not slow" tests

lint:
	$(PY) -m ruff check .

bench: setup
	$(PY) tools/bench_attention.py

clean:
	rm -rf .venv bench_out
