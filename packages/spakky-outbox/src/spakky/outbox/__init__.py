"""Transactional Outbox for the Spakky Framework."""

from spakky.core.application.plugin import Plugin

PLUGIN_NAME = Plugin(name="spakky-outbox")
"""Plugin identifier for the Outbox plugin."""
