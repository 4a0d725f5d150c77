#!/usr/bin/env bash
# The whole test suite: lint, strict typing, then pytest against real PostgreSQL and Kafka
# (DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS if set, else Docker via testcontainers, else embedded).
EXTRAS=dev source "$(dirname "$0")/venv.sh"
ruff check consumer producer_tools tests bench
ruff format --check consumer producer_tools tests bench
mypy
pytest "$@"
