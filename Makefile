.PHONY: demo test quick lint bench demo-model clean arm64-smoke

demo:  ## set up and run the built-in demo
	bash scripts/demo.sh

test:  ## set up, lint, type-check and run the tests
	bash scripts/test.sh -q

quick:  ## the same, without the slow and adversarial tests
	bash scripts/test.sh --quick -q

lint:
	.venv/bin/ruff check edge_runtime exporter tests scripts
	.venv/bin/mypy edge_runtime exporter
	.venv/bin/lint-imports

bench:  ## per-stage timings of the demo model on this machine
	.venv/bin/edge-runtime bench edge_runtime/demo

demo-model:  ## rebuild the demo export (needs torch; see the script's docstring)
	python scripts/build_demo_model.py edge_runtime/demo

clean:
	rm -rf .venv build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache

arm64-smoke:  ## emulated arm64 install and predict, compared with x86-64 (root; several minutes)
	PYTHON=$(CURDIR)/.venv/bin/python bash deploy/arm64-smoke.sh
