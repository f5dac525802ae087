"""Exponential backoff with jitter for message retries and outages."""

import random


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Return the pause before retry ``attempt`` (0-based): equal-jitter exponential.

    Half of the exponential step is kept so delays grow with each attempt; the
    other half is random so relays that failed together do not retry together.
    """
    step = min(cap, base * (2 ** min(attempt, 32)))
    return step / 2 + random.uniform(0, step / 2)
