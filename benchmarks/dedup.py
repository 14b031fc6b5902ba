"""Deduplication: round trips per message (happy path and skipped duplicate) and throughput vs bare.

Targets (issue 4): at most 2 Redis round trips per message on the happy path
(one claim script, one completion script; the lease renewer costs nothing for
a job shorter than a third of its lease) and at most 1 per skipped duplicate
(the claim script answers "completed").  Dedup's own round trips are its
scripts' EVALSHAs, counted by SHA-1 with MONITOR in runs of their own; the
broker's fetches, acks and heartbeats are the ``redis cmds/msg`` column,
which grows with a run's duration (idle fetches), not with dedup.
"""

from __future__ import annotations

import hashlib
from typing import Any

from dramatiq_resilience.backends.redis_base import script_source

from .bare import cli_row
from .harness import Run, measure_cli
from .runner import Context, row

#: Dedup's round trips per message on the happy path and per skipped duplicate.
TARGET_HAPPY = 2
TARGET_SKIP = 1

#: Every script the Deduplication middleware can run.
SCRIPTS = (
    "dedup_claim",
    "dedup_renew",
    "dedup_complete",
    "dedup_release",
    "dedup_reserve",
    "dedup_confirm",
    "dedup_inspect",
    "dedup_forget",
)


def dedup_round_trips(run: Run) -> dict[str, int]:
    """EVALSHA round trips of each dedup script in a MONITOR run."""
    shas = {hashlib.sha1(script_source(name).encode()).hexdigest(): name for name in SCRIPTS}
    return {shas[sha]: calls for sha, calls in (run.by_script or {}).items() if sha in shas}


@row("dedup")
def dedup(context: Context) -> dict[str, Any]:
    """A fresh key per message (claim + complete), then a run where every message is a completed duplicate."""
    monitored: list[Run] = []
    result = cli_row(context, "dedup", counted=monitored)
    [happy_run] = monitored
    skip_run = measure_cli(
        context.server, stack="dedup_skip", count=context.count_count, monitor=True, settle=context.settle
    )
    happy_scripts = dedup_round_trips(happy_run)
    skip_scripts = dedup_round_trips(skip_run)
    happy = round(sum(happy_scripts.values()) / happy_run.count, 3)
    skip = round(sum(skip_scripts.values()) / skip_run.count, 3)
    result.update(
        dedup_round_trips_per_msg=happy,
        dedup_round_trips_per_skipped_duplicate=skip,
        happy_path_scripts=happy_scripts,
        skipped_scripts=skip_scripts,
    )
    problems = []
    if happy > TARGET_HAPPY:
        problems.append(f"{happy} dedup round trips per message > {TARGET_HAPPY}")
    if skip > TARGET_SKIP:
        problems.append(f"{skip} dedup round trips per skipped duplicate > {TARGET_SKIP}")
    ratio = result["msgs_per_s"] / context.bare_msgs_per_s
    result["verdict"] = (
        f"FAIL: {'; '.join(problems)}"
        if problems
        else f"pass: {happy} dedup round trips per message (<= {TARGET_HAPPY}), {skip} per skipped "
        f"duplicate (<= {TARGET_SKIP}); throughput {ratio:.2f}x bare"
    )
    return result
