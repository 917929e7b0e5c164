"""Configuration: built once (by the CLI or a test) and passed to ``create_app``.

There is deliberately no cached module-level getter (BUG-020): two apps built from two
``Settings`` objects in one process behave independently.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

EMBEDDED_DATA_DIR = Path(".atelier")


class UnsafeProductionSettings(ValueError):
    """Production mode was asked to run on a default that is only safe for development."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ATELIER_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    environment: Literal["development", "production", "test"] = "development"

    # Where embedded adapters keep their state (SQLite file, workspaces, dev key).
    data_dir: Path = EMBEDDED_DATA_DIR

    # Database: SQLite (embedded) unless a URL is given.
    database_url: str | None = None
    database_pool_size: int = Field(10, ge=1, le=200)
    database_echo: bool = False

    # Coordination: in-process unless a Redis URL is given.
    redis_url: str | None = None
    redis_key_prefix: str = "atelier:"

    # Storage: a local directory unless an S3 bucket is given.
    s3_bucket: str | None = None
    s3_prefix: str = "workspaces"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None

    # Every request body but a file upload (JSON), refused past this while it streams in.
    max_json_body_bytes: int = Field(1024 * 1024, ge=1024)
    # Answers kept for Idempotency-Keys, per tenant (each up to 1 MiB, for 24 h).
    max_idempotency_records: int = Field(10_000, ge=1)
    # What else a tenant's requests make us keep, per tenant (agents: per agent).
    max_agents: int = Field(500, ge=1)
    max_agent_versions: int = Field(1000, ge=1)
    max_webhooks: int = Field(50, ge=1)
    max_api_keys: int = Field(100, ge=1)  # a tenant's active keys
    max_budgets: int = Field(200, ge=1)
    # Conversations and chats (LangGraph threads and forks among them) kept per end user.
    max_conversations_per_user: int = Field(10_000, ge=1)

    # Workspace quotas and upkeep.
    max_file_size: int = Field(100 * 1024 * 1024, ge=1)
    max_workspace_files: int = Field(10_000, ge=1)
    max_workspace_bytes: int = Field(5 * 1024 * 1024 * 1024, ge=1)
    storage_cleanup_interval_seconds: float = Field(30.0, gt=0)
    # Disk for this process's copies of workspaces that runs work in (least recently used
    # copies go first; a copy a run is using never does).
    workspace_cache_bytes: int = Field(10 * 1024 * 1024 * 1024, ge=0)

    # Models. The offline model is always there; each other provider once configured.
    default_model: str = "offline"
    default_currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    model_catalog_file: Path | None = None
    offline_model_delay_seconds: float = Field(0.005, ge=0, le=5)
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str = "https://api.anthropic.com"
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    bedrock_enabled: bool = False
    bedrock_region: str = "us-east-1"
    bedrock_endpoint_url: str | None = None
    model_timeout_seconds: float = Field(120.0, gt=0)
    title_wait_seconds: float = Field(3.0, ge=0, le=30)
    shutdown_grace_seconds: float = Field(20.0, ge=0, le=600)

    # Agent runs.
    run_deadline_seconds: float = Field(600.0, gt=0)
    run_idle_timeout_seconds: float = Field(300.0, gt=0)
    run_max_steps: int = Field(25, ge=1, le=1000)
    run_max_output_tokens: int = Field(32_000, ge=1)
    # The conversation lock's lifetime; renewed every third of it. A process that dies
    # holding it frees its conversation (and has its run reaped) within about this long.
    run_lease_seconds: float = Field(30.0, ge=1, le=3600)
    run_event_retention_seconds: int = Field(3600, ge=60)
    # What one process takes on (docs/operations.md, "Capacity"). Runs it executes at once:
    # past this a new run is refused (503 at_capacity, with Retry-After) so that the runs
    # it has keep their model's pace. Runs it opens at once (each a short transaction);
    # the others wait in line, in order, and one that would wait longer than
    # ``run_start_wait_seconds`` is refused (503 server_busy): a burst gets a clear answer
    # in a bounded time, never a first event seconds late.
    max_active_runs: int = Field(1000, ge=1)
    max_starting_runs: int = Field(16, ge=1)
    run_start_wait_seconds: float = Field(1.0, ge=0)
    # A tool call that needs a person's approval and gets no decision this long is denied.
    approval_timeout_seconds: float = Field(86_400.0, gt=0)

    # Tools from the MCP servers tenants name in their agents.
    # Fernet keys that seal write-only secrets (an MCP server's headers) at rest, comma-
    # separated: the first seals, every one opens (rotation). Outside production a key is
    # made once in ATELIER_DATA_DIR when none is set.
    secrets_key: SecretStr | None = None
    # Tenant URLs may reach loopback, private and link-local addresses (tests, an
    # on-premises deployment); otherwise refused after DNS resolution.
    mcp_allow_private: bool = False
    mcp_call_timeout_seconds: float = Field(30.0, gt=0, le=600)
    mcp_list_timeout_seconds: float = Field(10.0, gt=0, le=120)
    mcp_tools_cache_seconds: float = Field(60.0, ge=0, le=3600)
    # What a tenant's MCP server may make this process hold, counted while it is read: a
    # tool call's answer, a server's tool listing (all its pages), and its tools.
    mcp_max_result_bytes: int = Field(1024 * 1024, ge=1024)
    mcp_max_list_bytes: int = Field(1024 * 1024, ge=1024)
    mcp_max_tools: int = Field(128, ge=1, le=10_000)

    # Webhooks: sent by every process from the outbox, retried with backoff (base x 1, 60,
    # 360, 1440, 3600, 7200, ...: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h) for a day.
    webhook_allow_private: bool = False  # as mcp_allow_private, for webhook URLs
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=120)
    webhook_retry_base_seconds: float = Field(5.0, gt=0, le=3600)
    webhook_retry_window_seconds: float = Field(86_400.0, gt=0)
    webhook_poll_seconds: float = Field(1.0, gt=0, le=60)

    # HTTP server.
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    hsts: bool = True

    # Observability.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    metrics_token: SecretStr | None = None
    otel_enabled: bool = False

    # Authentication: how long a verified key (or end-user token) is trusted before it is
    # looked up again -- how soon a revocation reaches the other processes.
    api_key_cache_seconds: float = Field(5.0, ge=0, le=60)
    # End-user tokens (POST /v1/user-tokens): the longest lifetime one may be given, and how
    # many users' revocations a tenant keeps at once (each is dropped once it refuses nothing).
    user_token_max_seconds: int = Field(86_400, ge=60, le=30 * 86_400)
    max_token_revocations: int = Field(100_000, ge=1)
    # A tenant's identity provider (PUT /v1/identity): its JWKS URL may be on a private
    # address only when this allows it (tests, an on-premises IdP). Its keys are kept for
    # jwks_cache_seconds, fetched again at most every jwks_refresh_seconds when a token names
    # a key they lack (rotation), and read up to jwks_max_bytes.
    identity_allow_private: bool = False
    identity_jwks_cache_seconds: float = Field(300.0, ge=0, le=86_400)
    identity_jwks_refresh_seconds: float = Field(10.0, ge=0, le=3600)
    identity_jwks_max_bytes: int = Field(65_536, ge=1024, le=1_048_576)
    identity_fetch_timeout_seconds: float = Field(5.0, gt=0, le=60)
    # Origins a tenant may list for its frontends (PUT /v1/cors).
    max_cors_origins: int = Field(50, ge=1, le=1000)

    # Rate limits (per tenant+user, or per client IP when unauthenticated).
    rate_limit_enabled: bool = True
    rate_limit_per_minute: int = Field(600, ge=1)
    rate_limit_burst: int = Field(120, ge=1)
    # Ceilings above the per-user buckets: X-User-ID is the caller's word, so one key
    # rotating user ids still meets its key's and its tenant's limits.
    rate_limit_key_per_minute: int = Field(6000, ge=1)
    rate_limit_key_burst: int = Field(1200, ge=1)
    rate_limit_tenant_per_minute: int = Field(12000, ge=1)
    rate_limit_tenant_burst: int = Field(2400, ge=1)
    rate_limit_anonymous_per_minute: int = Field(120, ge=1)
    rate_limit_anonymous_burst: int = Field(30, ge=1)
    rate_limit_expensive_cost: int = Field(10, ge=1)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value

    @model_validator(mode="after")
    def _expensive_requests_fit_the_burst(self) -> Settings:
        smallest = min(
            self.rate_limit_burst, self.rate_limit_key_burst, self.rate_limit_tenant_burst
        )
        if self.rate_limit_expensive_cost > smallest:
            raise ValueError(
                "ATELIER_RATE_LIMIT_EXPENSIVE_COST cannot exceed ATELIER_RATE_LIMIT_BURST, "
                "_KEY_BURST or _TENANT_BURST (such a request could never be allowed)"
            )
        return self

    @model_validator(mode="after")
    def _production_refuses_unsafe_defaults(self) -> Settings:
        if self.environment != "production":
            return self
        problems = []
        if self.database_url is None or self.database_url.startswith("sqlite"):
            problems.append(
                "ATELIER_DATABASE_URL must point at PostgreSQL (SQLite is embedded-only)"
            )
        if self.redis_url is None:
            problems.append(
                "ATELIER_REDIS_URL is required (in-process coordination is one process)"
            )
        if self.s3_bucket is None:
            problems.append(
                "ATELIER_S3_BUCKET is required (the local workspace directory is one machine)"
            )
        if self.database_echo:
            problems.append("ATELIER_DATABASE_ECHO would log every statement and its parameters")
        if problems:
            raise UnsafeProductionSettings(
                "production mode refuses unsafe defaults:\n  - " + "\n  - ".join(problems)
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'atelier.db'}"

    @property
    def is_embedded_database(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def is_fully_embedded(self) -> bool:
        return self.is_embedded_database and self.redis_url is None and self.s3_bucket is None

    @property
    def workspace_dir(self) -> Path:
        return self.data_dir / "workspaces"

    @property
    def run_dir(self) -> Path:
        """Where runs materialise their workspaces: a directory per process, in it one per
        conversation, reused."""
        return self.data_dir / "runs"

    @property
    def secrets_key_file(self) -> Path:
        return self.data_dir / "secrets-key"

    @property
    def dev_api_key_file(self) -> Path:
        return self.data_dir / "dev-api-key"

    @property
    def json_logs(self) -> bool:
        if self.log_format == "auto":
            return self.environment == "production"
        return self.log_format == "json"
