from spakky.outbox.testing.conformance import *  # noqa: F403
