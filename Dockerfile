# The service image: `identity migrate | worker | relay | api` (docker-compose.yml runs each).
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
COPY pyproject.toml README.md ./
COPY consumer ./consumer
COPY producer_tools ./producer_tools
COPY sql ./sql
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --no-create-home identity

USER identity
EXPOSE 8000 9101 9102
CMD ["identity", "api", "--host", "0.0.0.0"]
