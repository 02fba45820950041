"""Settings of the gateway, read once from the environment at start-up."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.auth import parse_api_keys

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DEV_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/risk"
DEV_REDIS_URL = "redis://127.0.0.1:6379/0"
# Passwords that sample configurations use; production refuses them.
DEFAULT_PASSWORDS = frozenset({"postgres", "password", "changeme", "secret", "risk"})


class Settings(BaseSettings):
    """Every setting has one environment variable, named in upper case."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False)

    environment: Literal["development", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    log_level: str = "INFO"

    database_url: str = DEV_DATABASE_URL
    db_pool_min_size: int = Field(default=1, ge=0)
    db_pool_max_size: int = Field(default=10, ge=1)
    db_acquire_timeout_ms: int = Field(default=500, ge=1)
    db_statement_timeout_ms: int = Field(default=1000, ge=1)

    redis_url: str = DEV_REDIS_URL
    redis_timeout_ms: int = Field(default=100, ge=1)
    # Lets several gateways (or test runs) share one Redis database.
    redis_key_prefix: str = Field(default="risk:", max_length=64)
    idempotency_ttl_s: int = Field(default=86_400, ge=1)
    # How long a duplicate waits for the first request of the same id to finish
    # before it is told 409 "in progress".
    idempotency_wait_ms: int = Field(default=2_000, ge=0)
    # Longest time for reading and updating one customer's history in Redis,
    # compare-and-set retries included (and never past the request deadline).
    history_timeout_ms: int = Field(default=300, ge=1)

    triton_url: str = "127.0.0.1:8001"
    triton_timeout_ms: int = Field(default=250, ge=1)
    triton_ensemble: str = "risk_ensemble"
    triton_anomaly_model: str = "anomaly_autoencoder"
    triton_classifier_model: str = "risk_classifier"
    model_refresh_s: float = Field(default=5.0, gt=0)
    # Triton's model repository, where the gateway can read it too: adds the
    # versions on disk and the model cards' metrics to GET /model/info.
    model_repository: Path | None = None

    policy_path: Path = PROJECT_ROOT / "config" / "policy.toml"
    max_body_bytes: int = Field(default=65_536, ge=1024)
    max_batch_size: int = Field(default=256, ge=1, le=1024)

    # uvicorn worker processes (python -m gateway); one per core that the
    # gateway may use, the rest being left to Triton, PostgreSQL and Redis.
    workers: int = Field(default=1, ge=1, le=64)
    # Group commit: inserts waiting while another is written go together in
    # one multi-row INSERT (at most this many rows; 1 writes each alone).
    db_group_commit_max_rows: int = Field(default=64, ge=1, le=1000)
    # Extra wait before each group is written, to gather more rows (0: none).
    db_group_commit_window_ms: float = Field(default=0.0, ge=0, le=50)
    # GET /noop: the web stack alone, as a floor for benchmarks. Off by default.
    noop_route: bool = False
    # Longest time any request may take, whatever its dependencies do; past it
    # the answer is 503 "deadline_exceeded" and nothing is acknowledged.
    request_timeout_ms: int = Field(default=5_000, ge=100)

    # "name:scope1+scope2:sha256hex" entries, comma-separated (gateway.auth).
    # Empty: no authentication, refused in production.
    api_keys: str = ""

    @model_validator(mode="after")
    def _refuse_development_defaults_in_production(self) -> Settings:
        if self.environment == "production":
            defaults = {
                "DATABASE_URL": self.database_url == DEV_DATABASE_URL,
                "REDIS_URL": self.redis_url == DEV_REDIS_URL,
            }
            password = urlsplit(self.database_url).password
            defaults["DATABASE_URL password"] = password in DEFAULT_PASSWORDS
            defaults["API_KEYS"] = not self.api_keys.strip()
            left = sorted(name for name, is_default in defaults.items() if is_default)
            if left:
                raise ValueError(
                    "production refuses development defaults; set " + ", ".join(left)
                )
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ValueError("DB_POOL_MIN_SIZE must not exceed DB_POOL_MAX_SIZE")
        parse_api_keys(self.api_keys)
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
