"""Console settings, read from ``SPAKKY_OUTBOX_CONSOLE__*`` environment variables."""

from typing import Annotated, ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from spakky.outbox.common.config import settings_errors

SPAKKY_OUTBOX_CONSOLE_ENV_PREFIX = "SPAKKY_OUTBOX_CONSOLE__"
MAX_PAGE_SIZE = 200
"""Most rows one page or API call returns, whatever is asked."""
DEFAULT_PAGE_SIZE = 50
ACTION_BATCH = 1_000
"""Most messages one confirmed action changes; a larger scope takes several."""


class OutboxConsoleConfig(BaseSettings):
    """How the operator console behaves; every field has a safe default."""

    model_config: ClassVar[SettingsConfigDict] = SettingsConfigDict(
        env_prefix=SPAKKY_OUTBOX_CONSOLE_ENV_PREFIX, allow_inf_nan=False
    )

    token: SecretStr | None = None
    """Token an operator gives to act (requeue, purge). None: the console is read-only."""
    max_pending_age_seconds: Annotated[float, Field(gt=0)] | None = None
    """Health limit on the oldest pending message, as ``spakky-outbox health --max-pending-age``."""
    session_seconds: Annotated[float, Field(gt=0)] = 8 * 3600.0
    """How long a sign-in lasts."""
    secure_cookies: bool = False
    """Mark the sign-in cookie ``Secure`` (set it when the console is served over HTTPS)."""
    show_payloads: bool = False
    """Show payloads and headers on a message's page and in its API document.

    Off by default: they may hold personal data. Secrets in them (headers and
    JSON fields with secret names, URL credentials) are redacted either way."""

    def __init__(self, **values: object) -> None:
        """Load the settings from the environment; keyword arguments override it.

        Raises:
            InvalidOutboxConfigError: A variable holds a value of the wrong type
                or range; the error names the variable, never a token.
        """
        with settings_errors(SPAKKY_OUTBOX_CONSOLE_ENV_PREFIX):
            super().__init__(**values)  # pyright: ignore[reportArgumentType]

    @property
    def read_only(self) -> bool:
        """Whether actions are refused (no token set)."""
        return self.token is None or not self.token.get_secret_value()
