"""MongoDB storage for spakky-outbox.

Messages are inserted in the MongoDB transaction of the business use case
(`AsyncMongoTransaction` / `MongoTransaction`); business repositories pass
`current_async_session()` / `current_session()` to their own collection calls.
"""

from spakky.core.application.plugin import Plugin

PLUGIN_NAME = Plugin(name="spakky-outbox-mongodb")
"""Plugin identifier for the MongoDB outbox storage."""
