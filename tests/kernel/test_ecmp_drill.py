"""`lvsha drill --topology ecmp`, short: one scenario, few connections, real IPVS (the VM).

A director is killed (link cut, FRR and lvsha killed) under `mh` with `mh-port`: BFD takes it
out of the router's ECMP set, and the connections it forwarded go on through the two others,
which send each to the same real server (sloppy_tcp takes the moved flows). The full drill,
with every scenario and `wlc` for contrast, is run by hand for the README's table.
"""

from __future__ import annotations

import time

import pytest

from lvsha.drill.ecmp import EcmpOptions, ecmp_drill
from lvsha.drill.ecmp_report import EcmpScenario, format_table, met
from lvsha.drill.frr import missing_frr

pytestmark = pytest.mark.kernel


def test_a_killed_director_s_connections_go_on_under_mh() -> None:
    reason = missing_frr()
    if reason is not None:
        pytest.skip(reason)
    began = time.monotonic()
    run = ecmp_drill(
        EcmpOptions(
            schedulers=("mh",),
            scenarios=(EcmpScenario.KILL,),
            connections=60,
            new_per_second=5.0,
            warmup=1.0,
            settle=2.0,
            show_logs=True,
        )
    )
    (result,) = run.results
    print(format_table(run.results, f"short ECMP drill, {time.monotonic() - began:.0f} s"))
    assert result.change is not None
    assert result.connections >= 55
    assert result.affected >= 5  # the killed director carried some of them
    assert result.moved >= result.affected
    assert result.reset == 0  # nothing reset: every moved flow reached its own real server
    assert met(result), result
