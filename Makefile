# Every target goes through scripts/venv.sh, which creates .venv and keeps it in step with pyproject.toml.
SOURCES = consumer producer_tools tests bench
IN_VENV = EXTRAS=dev . scripts/venv.sh &&

.PHONY: dev test lint format typecheck docs lock bench

dev:  ## the whole stack locally (identity dev)
	./scripts/dev.sh

test:  ## lint, typing and the whole test suite (what .ci/run runs)
	./scripts/test.sh

lint:
	bash -c '$(IN_VENV) ruff check $(SOURCES) && ruff format --check $(SOURCES)'

format:
	bash -c '$(IN_VENV) ruff check --fix $(SOURCES) && ruff format $(SOURCES)'

typecheck:
	bash -c '$(IN_VENV) mypy'

docs:  ## regenerate docs/schemas/ and the settings tables
	bash -c '$(IN_VENV) python -m consumer.schemas && python -m consumer.settings_doc'

lock:  ## requirements.lock: the runtime dependencies, pinned with hashes, that the Docker image installs
	bash -c '$(IN_VENV) pip-compile --quiet --strip-extras --generate-hashes --no-emit-index-url \
		--no-emit-find-links --output-file requirements.lock pyproject.toml'

bench:  ## the pipeline and API benchmarks (minutes; they load the machine)
	bash -c '$(IN_VENV) python -m bench.pipeline_bench && python -m bench.api_bench'
