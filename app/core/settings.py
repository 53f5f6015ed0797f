"""Settings from `LOOKALIKE_*` environment variables, with embedded defaults.

The defaults need no servers: SQLite under the data folder, object storage in a
folder, Celery over its filesystem transport and email written as `.eml` files.
Production points the same settings at Postgres, S3, Redis and SMTP.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Every knob of the service; read once per process through `get_settings()`."""

    model_config = SettingsConfigDict(env_prefix="LOOKALIKE_", env_file=None, extra="ignore")

    data_dir: Path = Path("./data")
    database_url: str | None = None
    storage_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    # Downloads from S3 answer a redirect to a presigned link that lives this long (15 minutes at most),
    # signed for s3_public_endpoint_url when users reach the store at another address than this process.
    s3_public_endpoint_url: str | None = None
    download_link_seconds: int = Field(default=900, ge=1, le=900)
    broker_url: str | None = None
    # Prefix for every broker key, so that several deployments (or test runs) can share one Redis.
    broker_key_prefix: str = ""
    smtp_url: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    default_base_model: str = "auto"

    host: str = "127.0.0.1"
    port: int = 8000
    worker_concurrency: int = Field(default=2, ge=1)
    log_level: str = "INFO"

    # Upload limits. A request body over max_request_bytes is refused before it is read.
    max_request_bytes: int = Field(default=1024 * MiB, ge=1)
    max_file_bytes: int = Field(default=50 * MiB, ge=1)
    max_image_pixels: int = Field(default=100_000_000, ge=1)
    min_image_side: int = Field(default=64, ge=1)
    zip_max_entries: int = Field(default=1000, ge=1)
    zip_max_uncompressed_bytes: int = Field(default=2048 * MiB, ge=1)
    max_photos_per_subject: int = Field(default=5000, ge=1)
    max_caption_chars: int = Field(default=1000, ge=1)
    upload_threads: int = Field(default=0, ge=0)  # 0: one per CPU core

    # Rate limits per API key, as N/second, N/minute, N/hour, N/day or N/<seconds>s; 0 or empty turns one off.
    # Every request counts. A person uploads a few batches (the web page sends up to 64 MB per request) or a
    # script one photo per request; a training runs for minutes to hours; one generation request can ask for
    # several images. Shared by all API processes through Redis; per process with the embedded broker.
    rate_limit_uploads: str = "120/minute"
    rate_limit_trainings: str = "10/hour"
    rate_limit_generations: str = "60/minute"
    # Refused API keys (malformed, unknown, revoked) per client address, not per key: past it, that address's
    # failures get 429 and no audit entry each (one says it is throttled). A good key is never counted or refused.
    rate_limit_sign_in_failures: str = "20/minute"

    thumb_size: int = Field(default=512, ge=32)

    # Dataset review. 10 usable photos is the least that trains a recognisable face; 15-30 is
    # what kohya guides, ai-toolkit and the hosted trainers ask for, so at most 30 are selected.
    min_training_photos: int = Field(default=10, ge=1)
    max_training_photos: int = Field(default=30, ge=1)
    # dlib's encodings: photos of one person are usually under 0.6 apart (face_recognition's tolerance).
    identity_threshold: float = Field(default=0.6, gt=0, lt=2)
    jpeg_quality: int = Field(default=95, ge=50, le=100)

    # Training. A running worker renews its lease every heartbeat; once the lease is stale (the
    # worker died) the housekeeping sweep hands the job to another worker, which resumes it from
    # the latest checkpoint. Lease plus sweep interval bounds how long a dead worker's job waits.
    training_lease_s: float = Field(default=60.0, gt=0)
    training_heartbeat_s: float = Field(default=10.0, gt=0)
    # How many workers may die under one training before it fails with `worker_lost`.
    training_max_attempts: int = Field(default=3, ge=1)
    checkpoint_every: int = Field(default=250, ge=1)
    training_progress_s: float = Field(default=2.0, ge=0)  # how often progress is written (and cancel seen)
    # The quality assessment holds this many usable photos out of training as its honest reference,
    # once a subject has assessment_holdout_from or more (0 turns it off).
    assessment_holdout: int = Field(default=2, ge=0)
    assessment_holdout_from: int = Field(default=12, ge=1)
    models_dir: Path | None = None  # where tiny presets are generated; default <data_dir>/models

    # Photo analysis: the hard time limit of one photo (the worker process is killed past it, and a
    # claim older than this is a dead worker's), and how many claims a photo gets before it fails.
    analysis_time_limit_s: float = Field(default=180.0, gt=0)
    analysis_max_attempts: int = Field(default=3, ge=1)

    # The housekeeping sweep (Celery beat runs it every sweep_interval_s): it hands dead workers'
    # jobs on, and sends again a message for a job still waiting requeue_after_s after it was sent
    # (a message lost between commit and broker, or dropped by a killed worker). Each later resend
    # of the same job waits at least twice as long, so a long backlog is not flooded with copies.
    sweep_interval_s: float = Field(default=15.0, gt=0)
    requeue_after_s: float = Field(default=120.0, gt=0)
    # Retention: this long after a training ends, the sweep deletes its cache and checkpoints and the
    # subject's photos it was trained on (originals, crops, thumbnails); the LoRA and its samples stay.
    retention_days: float = Field(default=7.0, ge=0)

    # Notifications (email and webhooks, through the outbox). A temporary failure is tried again after
    # notify_retry_s, then three times as long each time, up to notify_max_attempts tries; a claim
    # older than notify_claim_s is a dead worker's and the sweep sends the notification again.
    notify_max_attempts: int = Field(default=8, ge=1)
    notify_retry_s: float = Field(default=10.0, gt=0)
    notify_claim_s: float = Field(default=120.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_progress_every_s: float = Field(default=30.0, ge=0)  # training.progress events at most this often
    # Webhook URLs that resolve to loopback, private or link-local addresses are refused unless this is
    # set (a service on a private network); cloud metadata addresses are refused always.
    webhook_allow_private_targets: bool = False

    # Generation. The GPU worker keeps up to generation_max_bases base models loaded (within
    # generation_budget_gib of GPU memory, default 85% of the card) and swaps LoRAs on them.
    generation_max_bases: int = Field(default=2, ge=1)
    generation_budget_gib: float | None = Field(default=None, gt=0)
    generation_lease_s: float = Field(default=60.0, gt=0)
    # `Prefer: wait` holds the request at most this long (Replicate's limit is 60 s).
    generation_max_wait_s: float = Field(default=60.0, ge=0)
    # The prompt policy, checked before any GPU work: these models depict real people. The default
    # terms refuse sexual content and minors; operators add terms and regular expressions of their own.
    prompt_policy_defaults: bool = True
    prompt_deny_terms: list[str] = Field(default_factory=list)
    prompt_deny_patterns: list[str] = Field(default_factory=list)
    # Files uploaded as inputs (LoRAs, start images, zips of photos), and LoRAs fetched by URL.
    max_input_file_bytes: int = Field(default=2048 * MiB, ge=1)
    lora_fetch_timeout_s: float = Field(default=300.0, gt=0)
    # LoRA URLs on loopback or private networks are refused unless this is set (as for webhooks).
    lora_allow_private_urls: bool = False

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @field_validator("prompt_deny_patterns")
    @classmethod
    def _patterns_compile(cls, value: list[str]) -> list[str]:
        import re

        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"prompt_deny_patterns: {pattern!r} is not a regular expression: {exc}") from None
        return value

    @field_validator(
        "rate_limit_uploads", "rate_limit_trainings", "rate_limit_generations", "rate_limit_sign_in_failures"
    )
    @classmethod
    def _rate(cls, value: str) -> str:
        from app.core.ratelimit import parse_rate

        parse_rate(value)  # a typo stops the start with the accepted forms, rather than turning a limit off
        return value

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL; the embedded default is a SQLite file in the data folder."""
        return self.database_url or f"sqlite:///{self.data_dir / 'lookalike.db'}"

    @property
    def resolved_storage_url(self) -> str:
        """`file:///abs/path` or `s3://bucket/prefix`."""
        return self.storage_url or f"file://{self.data_dir / 'storage'}"

    @property
    def resolved_broker_url(self) -> str:
        """Celery broker URL; `filesystem://` (no server) unless one is configured."""
        return self.broker_url or "filesystem://"

    @property
    def queue_dir(self) -> Path:
        """Where the filesystem transport keeps its messages."""
        return self.data_dir / "queue"

    @property
    def outbox_dir(self) -> Path:
        """Where emails land as `.eml` files when no SMTP server is configured."""
        return self.data_dir / "outbox"

    @property
    def is_embedded_broker(self) -> bool:
        return self.resolved_broker_url.startswith("filesystem://")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
