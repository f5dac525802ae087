"""Inbox settings, read from ``SPAKKY_OUTBOX__INBOX__*``."""

from typing import Annotated, ClassVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from spakky.core.stereotype.configuration import Configuration
from spakky.outbox.common.config import settings_errors

SPAKKY_OUTBOX_INBOX_CONFIG_ENV_PREFIX = "SPAKKY_OUTBOX__INBOX__"
DEFAULT_WINDOW_SECONDS = 7 * 24 * 3600.0
"""Seven days, NServiceBus's default: longer than any broker keeps a redelivery."""
DEFAULT_SWEEP_INTERVAL_SECONDS = 300.0
"""Five minutes: records outlive the window by at most that, at one query per interval when none expired."""


@Configuration()
class InboxConfig(BaseSettings):
    """Settings of the inbox: the dedup window, the lease, the sweep's batch and interval."""

    model_config: ClassVar[SettingsConfigDict] = SettingsConfigDict(
        env_prefix=SPAKKY_OUTBOX_INBOX_CONFIG_ENV_PREFIX,
        env_file_encoding="utf-8",
    )

    window_seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)] = DEFAULT_WINDOW_SECONDS
    """How long a record is kept: a duplicate arriving later runs the handler again."""
    lease_seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 60.0
    """Lease mode: after this long without finishing, another delivery runs the handler."""
    sweep_batch: Annotated[int, Field(ge=1, le=100_000)] = 1_000
    """Most records one sweep statement deletes, so a sweep never holds the store for long."""
    sweep_interval_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = DEFAULT_SWEEP_INTERVAL_SECONDS
    """How often the consuming application sweeps expired records on a store without TTLs; 0: never."""

    def __init__(self) -> None:
        """Load the settings from environment variables.

        Raises:
            InvalidOutboxConfigError: A variable has a wrong type or range.
        """
        with settings_errors(SPAKKY_OUTBOX_INBOX_CONFIG_ENV_PREFIX):
            super().__init__()
