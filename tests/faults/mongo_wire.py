"""The mongoeco wire server in a process of its own, so relay processes share one MongoDB stand-in.

Run as ``mongo_wire.py PORT``: serves the MongoDB wire protocol from mongoeco's
memory engine on 127.0.0.1:PORT until SIGTERM. The in-process fixture's server
(``spakky_outbox_testservices.resolve``) lives in the test process, which
the drill pauses and whose event loop it blocks; this one answers every relay
for the drill's lifetime.
"""

import asyncio
import signal
import sys


async def serve(port: int) -> None:
    """Serve until SIGTERM."""
    from mongoeco.engines.memory import MemoryEngine  # pyright: ignore[reportMissingImports]
    from mongoeco.wire import AsyncMongoEcoProxyServer  # pyright: ignore[reportMissingImports]

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    server = AsyncMongoEcoProxyServer(
        engine=MemoryEngine(), host="127.0.0.1", port=port
    )  # pyright: ignore[reportUnknownVariableType]
    await server.start()  # pyright: ignore[reportUnknownMemberType]
    try:
        await stop.wait()
    finally:
        await server.close()  # pyright: ignore[reportUnknownMemberType]


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
