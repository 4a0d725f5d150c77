# The service image: `identity migrate | worker | relay | api` (docker-compose.yml runs each).
FROM python:3.11-slim

# Migrations are read from the repository's sql/ directory, which a wheel install does not carry.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MIGRATIONS_DIR=/app/sql

WORKDIR /app
COPY pyproject.toml README.md ./
COPY consumer ./consumer
COPY producer_tools ./producer_tools
COPY sql ./sql
RUN pip install . \
    && useradd --system --uid 10001 --no-create-home identity

USER identity
EXPOSE 8000 9101 9102
CMD ["identity", "api", "--host", "0.0.0.0"]
