"""Hammer one rate window from a separate process: ``python -m tests.apps.window_hammer ...``.

Arguments: REDIS_URL NAMESPACE COUNT PER_MS START_MS END_MS.  Waits until the
Redis server's clock reaches START_MS, then calls ``window_acquire`` as fast
as it can until END_MS (server time), and prints the server times of the
granted decisions as a JSON list.
"""

from __future__ import annotations

import json
import sys
import time

from dramatiq_resilience import RedisBackend
from dramatiq_resilience.backends.window import RateSpec


def main(argv: list[str]) -> None:
    url, namespace, count, per, start, end = argv
    backend = RedisBackend(url=url, namespace=namespace)
    spec = RateSpec("hammered", "one-key", int(count), int(per))
    while backend.now_ms() < int(start):
        time.sleep(0.001)
    granted = []
    while True:
        decision = backend.window_acquire("m", [spec])
        if decision.now_ms >= int(end):
            break
        if decision.granted:
            granted.append(decision.now_ms)
    print(json.dumps(granted))


if __name__ == "__main__":
    main(sys.argv[1:])
