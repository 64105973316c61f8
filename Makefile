# seqattn: the two commands a newcomer needs.
#   make demo   run the main job (installs what it needs into .venv)
#   make test   run the test suite (installs what it needs into .venv)
PY := .venv/bin/python

.PHONY: demo test setup bench clean

setup:
	bash tools/setup_env.sh test
	bash tools/install_system_deps.sh
	bash tools/install_kenlm.sh || echo "[setup] warning: KenLM could not be built; the beam-search test will skip"

demo: setup
	bash tools/demo.sh

test: setup
	$(PY) -m pytest -q -m "not cuda" -n auto --dist loadscope tests  # CUDA tests: tools/gpu_check.sh on a GPU machine

bench: setup
	$(PY) tools/bench_attention.py

clean:
	rm -rf .venv bench_out
