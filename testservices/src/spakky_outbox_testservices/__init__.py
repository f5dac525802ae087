"""Test services shared by the workspace's root tests and every package's tests (development only).

`resolve` finds a reachable server (environment URL, local port, testcontainers),
`private`, `redis_servers`, `rabbitmq_servers` and `tansu` start private ones,
and `fixtures` (a pytest plugin, loaded wherever this package is installed)
hands them to tests as session fixtures.
"""
