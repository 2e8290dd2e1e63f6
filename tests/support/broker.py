"""The local RabbitMQ the scaled mode's tests run against (.ci/run starts
one when it can), and whether it answers: the tests that need it skip
without it."""

from __future__ import annotations

import aio_pika

BROKER = "amqp://guest:guest@127.0.0.1:5672/"


async def broker_up() -> bool:
    try:
        connection = await aio_pika.connect(BROKER, timeout=3)
    except Exception:  # noqa: BLE001 - any failure means no broker here
        return False
    await connection.close()
    return True
