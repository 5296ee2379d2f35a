"""The VRRP process applies what the parent sends: ApplyConfig in, ConfigApplied out, in order."""

from __future__ import annotations

import hashlib
import logging

import pytest

from lvsha.daemon import vrrp_process
from lvsha.daemon.vrrp_process import apply_config, follow_parent
from lvsha.messages import (
    ApplyConfig,
    ChildReady,
    ConfigApplied,
    decode,
    encode,
    for_vrrp,
)
from lvsha.vrrp.engine import VrrpEngine
from tests.unit.vrrp.engine_harness import Channel, Harness, StaticLinks, config, instance, vip

DIGEST = hashlib.sha256(b"the file").hexdigest()


def sent(generation: int, cfg: object) -> ApplyConfig:
    """The message as it crosses the channel."""
    message = decode(encode(ApplyConfig.of(generation, DIGEST, for_vrrp(cfg))))  # type: ignore[arg-type]
    assert isinstance(message, ApplyConfig)
    return message


async def test_a_configuration_is_applied_answered_and_logged(
    lab: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10))}))
    caplog.set_level(logging.INFO, logger="lvsha.vrrp")
    new = config({"VI_1": instance(1, vip(10), priority=150)})
    answer = await apply_config(engine, sent(3, new), StaticLinks(engine, set()))
    assert answer == ConfigApplied(3, True)
    assert engine.instances["VI_1"].runner.machine.params.priority == 150
    assert (
        f"configuration generation 3 (sha256 {DIGEST[:12]}) applied: VI_1: priority 100 -> 150"
        in caplog.messages
    )


async def test_a_refused_configuration_is_answered_with_why(lab: Harness) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10))}))
    lab.refuse_socket.add("eth1")
    new = config(
        {"VI_1": instance(1, vip(10)), "VI_2": instance(2, "198.51.100.2/24", interface="eth1")}
    )
    answer = await apply_config(engine, sent(4, new), StaticLinks(engine, set()))
    assert not answer.ok and answer.generation == 4
    assert any("cannot open the VRRP socket on eth1" in e for e in answer.errors)
    assert list(engine.instances) == ["VI_1"]


async def test_a_snapshot_that_is_no_configuration_is_refused(lab: Harness) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10))}))
    answer = await apply_config(
        engine, ApplyConfig(5, DIGEST, "bm90IGEgcGlja2xl"), StaticLinks(engine, set())
    )
    assert not answer.ok and answer.errors


async def test_configurations_are_applied_one_at_a_time_in_order(
    lab: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10))}))
    running: list[int] = []
    overlaps: list[int] = []
    apply = VrrpEngine.apply

    async def watched(self: VrrpEngine, new: object, links: object = None) -> object:
        if running:
            overlaps.append(len(running))
        running.append(1)
        try:
            return await apply(self, new, links)  # type: ignore[arg-type]
        finally:
            running.pop()

    monkeypatch.setattr(VrrpEngine, "apply", watched)
    channel = Channel(
        [
            sent(2, config({"VI_1": instance(1, vip(10), priority=110)})),
            ChildReady(),  # not for the VRRP process: ignored
            sent(3, config({"VI_A": instance(1, vip(10), priority=120)})),
        ]
    )
    await follow_parent(engine, channel, StaticLinks(engine, set()))
    assert channel.answers == [ConfigApplied(2, True), ConfigApplied(3, True)]
    assert overlaps == []
    assert list(engine.instances) == ["VI_A"]
    assert engine.instances["VI_A"].runner.machine.params.priority == 120


def test_the_stop_limit_follows_the_running_intervals() -> None:
    slow = config({"VI_1": instance(1, vip(10), version=2, advert_interval=5)})
    assert vrrp_process._stop_limit(slow) == 4 * 5 + 2 + 5.0
