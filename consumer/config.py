"""Settings, read once from environment variables (see the README's configuration table)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# The blocklist hash key's default, for local runs only: `identity` warns when it is in use elsewhere.
DEV_HASH_KEY = "identity-reconciliation-insecure-dev-key"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    database_url: str = "postgresql://postgres@127.0.0.1:5432/identity"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"

    checkout_topic: str = "checkout.events"
    resolved_topic: str = "identity.resolved"
    merged_topic: str = "identity.merged"
    dlq_topic: str = "checkout.events.dlq"
    kafka_group_id: str = "identity-worker"
    # Tansu delays a group join by about half the session timeout; 6 s keeps joins quick.
    kafka_session_timeout_ms: int = 6000
    kafka_heartbeat_interval_ms: int = 1000
    kafka_max_poll_interval_ms: int = 300_000

    worker_batch_size: int = Field(500, ge=1, le=5000)
    worker_batch_timeout_s: float = Field(0.2, gt=0)
    worker_metrics_port: int = 9101
    # Backoff for transient failures (database down, DLQ undeliverable): exponential, capped, unbounded.
    worker_retry_initial_s: float = Field(0.5, gt=0)
    worker_retry_max_s: float = Field(30.0, gt=0)
    worker_db_connect_timeout_s: int = Field(5, ge=1)
    # How long one DLQ delivery attempt may take before it is retried (the consumer keeps polling).
    worker_dlq_timeout_s: float = Field(30.0, gt=0)
    relay_batch_size: int = Field(1000, ge=1)
    relay_poll_interval_s: float = Field(1.0, gt=0)
    relay_metrics_port: int = 9102
    # A delivery not acknowledged within this time fails; the relay then retries from that row.
    relay_delivery_timeout_s: float = Field(30.0, gt=0)
    relay_prune_interval_s: float = Field(300.0, gt=0)
    relay_retry_max_s: float = Field(30.0, gt=0)
    outbox_retention_hours: float = Field(24.0, ge=0)

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_workers: int = Field(1, ge=1)
    api_pool_min_size: int = Field(2, ge=1)
    api_pool_max_size: int = Field(16, ge=1)
    api_max_body_bytes: int = Field(16_384, ge=256)
    api_source: str = "identity-api"
    # How long a request waits for a pooled connection before answering 503.
    api_pool_timeout_s: float = Field(5.0, gt=0)
    api_access_log: bool = False
    # POST /identify calls that arrive together share one transaction (consumer/api/batching.py).
    api_batch_max_size: int = Field(32, ge=1, le=1000)
    api_batch_drainers: int = Field(4, ge=1)

    console_secret_key: str | None = Field(
        None,
        description="Signs the operator console's session cookie. Unset: a random key per start, so "
        "restarting the API signs every operator out. Set it when API processes must share sessions.",
    )
    console_session_max_age_s: int = Field(
        8 * 3600, ge=60, description="How long a console sign-in lasts, in seconds."
    )
    console_secure_cookie: bool = Field(
        False, description="Send the console's session cookie over HTTPS only (set behind TLS)."
    )
    console_worker_metrics_url: str | None = Field(
        None,
        description="Where the console's pipeline page reads the worker's Prometheus metrics. "
        "Unset: http://127.0.0.1:WORKER_METRICS_PORT/metrics.",
    )
    console_refresh_s: float = Field(5.0, gt=0, description="How often the pipeline page refreshes.")

    default_phone_region: str | None = None
    email_max_length: int = Field(320, ge=3)
    phone_max_length: int = Field(32, ge=3)
    email_validation: bool = False

    # Guardrails (docs/guardrails.md).
    max_links_per_value: int = Field(
        20, ge=1, description="Rule 13: a value linked to more distinct values of the other kind is blocked."
    )
    max_identifiers_per_identity: int = Field(
        100, ge=2, description="Rule 14: the most distinct emails and phones one identity may hold."
    )
    blocklist_patterns: bool = Field(
        True, description="Treat values matching the shipped junk patterns (docs/guardrails.md) as blocked."
    )
    identity_hash_key: SecretStr = Field(
        SecretStr(DEV_HASH_KEY),
        description="Secret key of the blocklist's value hashes (HMAC-SHA256); set your own in production "
        "and never change it (existing blocks would no longer match).",
    )

    dev_data_dir: str = ".local"
    dev_checkout_partitions: int = Field(6, ge=1)

    log_format: Literal["json", "console"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


@lru_cache
def get_settings() -> Settings:
    return Settings()
