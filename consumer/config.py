"""Settings, read once from environment variables (the upper-case field names).

Each field's description is the documentation: `python -m consumer.settings_doc` writes the settings
tables of README.md and docs/ from them, and `--check` (run by the tests) fails when they drift.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Beyond this, more API processes mostly add connections (API_POOL_MAX_SIZE each) and contention.
API_WORKERS_CAP = 4
# The blocklist hash key's default, for local runs only: `identity` warns when it is in use elsewhere.
DEV_HASH_KEY = "identity-reconciliation-insecure-dev-key"


def available_cpus() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/identity",
        description="PostgreSQL (13 or newer) connection URL",
    )
    database_connect_timeout_s: int = Field(
        5,
        ge=1,
        validation_alias=AliasChoices("database_connect_timeout_s", "worker_db_connect_timeout_s"),
        description="connect timeout of every service connection (worker, relay, API pool); "
        "`WORKER_DB_CONNECT_TIMEOUT_S` is still read",
    )
    migrations_dir: str | None = Field(
        None, description="where `identity migrate` finds its files (unset: the `sql/` of the checkout)"
    )
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")

    checkout_topic: str = Field("checkout.events", description="input topic")
    resolved_topic: str = Field("identity.resolved", description="output topic for resolutions")
    merged_topic: str = Field("identity.merged", description="output topic for merges")
    split_topic: str = Field("identity.split", description="output topic for splits (rule 15)")
    erased_topic: str = Field("identity.erased", description="output topic for erasures (rule 17)")
    dlq_topic: str = Field("checkout.events.dlq", description="dead-letter topic")
    kafka_group_id: str = Field("identity-worker", description="the workers' consumer group")
    kafka_session_timeout_ms: int = Field(
        6000, description="consumer session timeout (short: Tansu delays a group join by half of it)"
    )
    kafka_heartbeat_interval_ms: int = Field(1000, description="consumer heartbeat interval")
    kafka_max_poll_interval_ms: int = Field(
        300_000,
        description="longest time between polls before the member is evicted (`max.poll.interval.ms`)",
    )

    metrics_host: str = Field(
        "127.0.0.1",
        description="address the worker's and the relay's Prometheus endpoints bind to "
        "(`0.0.0.0` where a scraper on another host reads them, as in docker-compose.yml)",
    )
    worker_batch_size: int = Field(500, ge=1, le=5000, description="most events per transaction")
    worker_batch_timeout_s: float = Field(0.2, gt=0, description="longest wait to fill a batch")
    worker_metrics_port: int = Field(9101, description="worker's Prometheus port (0: off)")
    worker_retry_initial_s: float = Field(0.5, gt=0, description="first backoff after a transient failure")
    worker_retry_max_s: float = Field(30.0, gt=0, description="longest backoff (it is unbounded in count)")
    worker_dlq_timeout_s: float = Field(
        30.0, gt=0, description="how long one dead-letter delivery attempt may take before it is retried"
    )
    relay_batch_size: int = Field(
        1000, ge=1, description="events per publishing round (whole outbox rows: a larger row goes alone)"
    )
    relay_poll_interval_s: float = Field(
        1.0,
        gt=0,
        description="polling fallback when no NOTIFY arrives, and the standby's lock retry interval",
    )
    relay_metrics_port: int = Field(9102, description="relay's Prometheus port (0: off)")
    relay_delivery_timeout_s: float = Field(
        30.0, gt=0, description="an unacknowledged delivery fails after this; the relay retries from that row"
    )
    relay_prune_interval_s: float = Field(300.0, gt=0, description="how often published rows are pruned")
    relay_retry_max_s: float = Field(30.0, gt=0, description="longest backoff")
    outbox_retention_hours: float = Field(
        24.0, ge=0, description="published outbox rows older than this are deleted"
    )

    api_host: str = Field("127.0.0.1", description="API bind address")
    api_port: int = Field(8000, description="API port")
    api_workers: int | None = Field(
        None,
        ge=1,
        description=f"uvicorn worker processes (unset: one per available core, at most {API_WORKERS_CAP})",
    )
    api_pool_min_size: int = Field(2, ge=1, description="connections per API process, at least")
    api_pool_max_size: int = Field(16, ge=1, description="connections per API process, at most")
    api_max_body_bytes: int = Field(16_384, ge=256, description="larger request bodies get 413")
    api_source: str = Field(
        "identity-api", description="provenance `source` of API-created rows and output events"
    )
    api_pool_timeout_s: float = Field(
        5.0, gt=0, description="wait for a pooled connection before answering 503"
    )
    api_access_log: bool = Field(False, description="uvicorn access log")
    api_batch_max_size: int = Field(
        32, ge=1, le=1000, description="most concurrent `/identify` calls that share one transaction"
    )
    api_batch_drainers: int = Field(
        1, ge=1, description="transactions taking new `/identify` calls at once, per API process"
    )
    api_batch_linger_ms: float = Field(
        2.0,
        ge=0,
        le=1000,
        description="longest a batch waits for as many calls as the process last had at once (0: never)",
    )
    api_auth: bool = Field(
        True,
        description="`off`: every route is open to anyone, for local experiments only (a warning is logged)",
    )
    api_auth_cache_ttl_s: float = Field(
        5.0,
        ge=0,
        description="how long an API process trusts a key it looked up: revocation takes effect within it",
    )
    api_blocklist_cache_ttl_s: float = Field(
        5.0,
        ge=0,
        description="how long an API process remembers a value it found blocked, so that calls holding it "
        "skip that value's locks (each call still checks the block; 0: off)",
    )
    api_rate_limit_per_s: float = Field(
        200.0, gt=0, description="requests per second of a client without its own limit (token bucket refill)"
    )
    api_rate_limit_burst: int = Field(
        400, ge=1, description="bucket size: requests a client may send at once"
    )
    api_auth_failures_per_s: float = Field(
        0.5, gt=0, description="failed authentications per second a peer address may keep up; then 429"
    )
    api_auth_failure_burst: int = Field(
        20, ge=1, description="failed authentications a peer may make at once"
    )

    console_secret_key: str | None = Field(
        None,
        description="signs the operator console's session cookie (unset: a random key per start, so a "
        "restart signs every operator out; set it for API processes on several hosts)",
    )
    console_session_max_age_s: int = Field(8 * 3600, ge=60, description="how long a console sign-in lasts")
    console_secure_cookie: bool = Field(
        False, description="send the console's session cookie over HTTPS only (set it behind TLS)"
    )
    console_worker_metrics_url: str | None = Field(
        None,
        description="where the console's pipeline page reads the worker's Prometheus metrics "
        "(unset: `http://127.0.0.1:WORKER_METRICS_PORT/metrics`)",
    )
    console_refresh_s: float = Field(5.0, gt=0, description="how often the console's pipeline page refreshes")

    default_phone_region: str | None = Field(
        None, description="e.g. `US`: store phones that are possible numbers there as E.164"
    )
    email_max_length: int = Field(320, ge=3, description="longer emails are rejected (422 / dead letter)")
    phone_max_length: int = Field(32, ge=3, description="longer phones are rejected")
    email_validation: bool = Field(
        False, description="reject emails that are not syntactically valid (`email-validator`)"
    )

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

    dev_data_dir: str = Field(".local", description="`identity dev`: where PostgreSQL keeps its data")
    dev_checkout_partitions: int = Field(
        6, ge=1, description="`identity dev`: partitions of the topics it creates"
    )

    log_format: Literal["json", "console"] = Field("json", description="`json`, or `console` for people")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="`DEBUG`, `INFO`, `WARNING` or `ERROR`"
    )

    @property
    def api_processes(self) -> int:
        """API_WORKERS, or what fits the machine."""
        return self.api_workers or min(available_cpus(), API_WORKERS_CAP)

    def output_topics(self) -> dict[str, str]:
        """The topic of each output event type (`consumer.contract`'s `*_TYPE`)."""
        return {
            "identity.resolved": self.resolved_topic,
            "identity.merged": self.merged_topic,
            "identity.split": self.split_topic,
            "identity.erased": self.erased_topic,
        }


@lru_cache
def get_settings() -> Settings:
    return Settings()
