# The service image: `identity migrate | worker | relay | api` (docker-compose.yml runs each).

# First stage: the package as a wheel, its reconciliation core compiled by mypyc (setup.py): about a
# sixth less CPU per event in the worker (docs/benchmarks.md). mypyc type-checks what it compiles, so this
# stage installs the locked runtime dependencies and mypy beside the C compiler of the full image.
FROM python:3.11 AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock \
    && pip install mypy==2.4.1 setuptools==84.2.1
COPY pyproject.toml setup.py README.md ./
COPY consumer ./consumer
COPY producer_tools ./producer_tools
RUN IDENTITY_COMPILE=1 pip wheel --no-build-isolation --no-deps --wheel-dir /wheels .

# The image: slim, with the same locked dependencies and the compiled wheel, no compiler.
FROM python:3.11-slim

# Migrations are read from the repository's sql/ directory, which a wheel install does not carry.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MIGRATIONS_DIR=/app/sql

WORKDIR /app
# Every runtime dependency at the version and hash of requirements.lock (pip-compile, `make lock`):
# the same image from the same commit. Its own layer, so a code change does not reinstall them.
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock
COPY sql ./sql
COPY --from=build /wheels /wheels
RUN pip install --no-deps /wheels/*.whl \
    && rm -r /wheels \
    && useradd --system --uid 10001 --no-create-home identity

USER identity
EXPOSE 8000 9101 9102
CMD ["identity", "api", "--host", "0.0.0.0"]
