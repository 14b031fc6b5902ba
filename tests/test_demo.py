"""The demo: the README's first command, in-process and on real workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
#: The console script, as a user runs it.
COMMAND = str(Path(sys.executable).parent / "dramatiq-resilience")


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ACTORS_REDIS_URL"}
    return subprocess.run(
        [COMMAND, "demo", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def summary(stdout: str) -> str:
    return stdout.split("Summary\n=======\n", 1)[1].rsplit("\nDone in", 1)[0]


EXPECTED = """\
Payments through a flaky gateway
  12 charges sent, 10 orders charged, 0 charged twice
  15 gateway calls: 3 retries after gateway timeouts
  2 declined cards dead-lettered without a retry (throws=)
A gateway outage behind the payments-gateway breaker
  breaker opened after 5 failures in 5 calls; then: open (1000 ms), half-open, open (2000 ms), \
half-open, closed
  2 probes: 1 failed while the gateway was down, 1 succeeded and closed it
  20 charges sent, 20 deferred at least once, 20 charged once, 0 charged twice, 0 dead-lettered
  26 gateway calls: 20 charges, 5 failures before it opened, 1 failed probe; 6 retries spent, all on real \
failures, none on deferrals
Dead letters: declined charges kept, one requeued
  2 declined charges recorded: permanent CardDeclined after 1 attempt(s)
  order-004 requeued: 1 enqueued; requeued again: 0 enqueued (not_dead); then charged 1 time(s)
  store: 1 dead (order-009), 1 requeued
Webhooks for three tenants
  acme: 10 delivered, globex: 10 delivered, initech: 10 delivered
  at most 5 deliveries per tenant in any 1-second window (limit 5 per second)
  15 over the limit were deferred, not failed: 0 dead-lettered, 0 delivered twice
Maintenance jobs
  purge_expired_sessions ran 1 time(s)
Duplicate webhooks and a double-clicked payment
  webhooks: 24 deliveries of 10 events received, 10 delivered, 14 duplicates skipped
  webhooks: 10 events delivered exactly once, 0 twice
  payments: order-101 clicked twice: the second click got the same message
  payments: a plain resend of order-101 was refused (DuplicateMessage); order-101 charged 1 time(s)
A producer warned, slowed, then refused by a full reports queue
  14 exports requested: 8 passed at once, 4 slowed (waited 25, 50, 75, 100 ms), 2 refused (QueueOverloaded, \
emergency at 12)
  an urgent export marked backpressure_exempt passed with 12 exports waiting
  drained by the workers, the queue took a new export; 14 exports ran, 0 twice
Cron jobs fired exactly once
  maintenance.heartbeat (every 1 s): 3 consecutive occurrences, each ran exactly once; 0 occurrences ran twice
  disabled: 0 runs in the next 2 s; run-now while disabled: ran 1 time(s)
Health at the end
  overall: degraded 77.1 (failure rate 21% on queue 'payments' (9 of 43 attempts) -20.9; \
2 new dead letter(s) -2)
  queue payments: degraded 77.1 (failure rate 21% (9 of 43 attempts) -20.9; 2 new dead letter(s) -2)
  every other queue (4): healthy 100
"""


def test_demo_runs_in_process() -> None:
    """`dramatiq-resilience demo` on StubBroker + StubBackend prints the expected summary."""
    result = run_demo()
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("dramatiq-resilience demo: StubBroker + StubBackend, in this process")
    assert summary(result.stdout) == EXPECTED


@pytest.mark.slow
def test_demo_runs_on_real_workers(redis_url: str) -> None:
    """`demo --redis URL` gives the same summary with real dramatiq processes, and cleans up."""
    result = run_demo("--redis", redis_url, "--processes", "2", "--threads", "4")
    assert result.returncode == 0, result.stderr
    assert "with 2 dramatiq processes x 4 threads" in result.stdout
    assert summary(result.stdout) == EXPECTED
    assert redis.Redis.from_url(redis_url).dbsize() == 0


def test_demo_explains_a_missing_app(tmp_path: Path) -> None:
    """Run from elsewhere, the demo says where to run it from."""
    result = subprocess.run(
        [COMMAND, "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "Run the demo from the repository root" in result.stderr
