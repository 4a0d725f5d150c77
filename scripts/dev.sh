#!/usr/bin/env bash
# The whole service locally on embedded PostgreSQL and the embedded Kafka-compatible broker.
source "$(dirname "$0")/venv.sh"
exec identity dev "$@"
