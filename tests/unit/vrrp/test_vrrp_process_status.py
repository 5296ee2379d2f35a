"""The VRRP process's side of `lvsha status` and `lvsha handover`: VrrpStatus sent every
STATUS_INTERVAL and right after a change (coalesced), SetHandover taken and answered."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from lvsha.daemon import vrrp_process
from lvsha.daemon.vrrp_process import StatusReporter, build_parser, follow_parent
from lvsha.messages import Message, SetHandover, VrrpStatus
from lvsha.vrrp.events import VrrpState
from tests.tools import api_schema
from tests.unit.vrrp.engine_harness import (
    Channel,
    Harness,
    StaticLinks,
    config,
    instance,
    vip,
    wait_for,
)


def instances(message: Message) -> dict[str, dict[str, Any]]:
    assert isinstance(message, VrrpStatus)
    body = json.loads(message.body)
    assert set(body) == {"instances"}
    for item in body["instances"]:
        api_schema.check_def("status", "vrrp_instance", item)
    return {item["name"]: item for item in body["instances"]}


async def test_changes_in_one_callback_are_sent_once_soon_after(lab: Harness) -> None:
    sent: list[Message] = []
    reporter = StatusReporter(sent.append)
    engine = await lab.start(
        config({"VI_1": instance(1, vip(10), state="MASTER")}), on_status_change=reporter.changed
    )
    assert sent == []  # nothing before start (ChildReady comes first)
    reporter.start(engine)
    assert len(sent) == 1 and instances(sent[0])["VI_1"]["state"] == "BACKUP"
    reporter.changed()
    reporter.changed()
    reporter.changed()
    assert len(sent) == 1  # not within the callback that saw the change
    await wait_for(lambda: len(sent) == 2)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(sent) == 2  # three changes, one status
    await wait_for(lambda: lab.state("VI_1") is VrrpState.MASTER)
    await wait_for(lambda: instances(sent[-1])["VI_1"]["state"] == "MASTER", 0.5)
    reporter.stop()


async def test_status_is_sent_every_interval(lab: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vrrp_process, "STATUS_INTERVAL", 0.01)
    sent: list[Message] = []
    reporter = StatusReporter(sent.append)
    engine = await lab.start(config({"VI_1": instance(1, vip(10))}))
    reporter.start(engine)
    await wait_for(lambda: len(sent) >= 4)
    reporter.stop()
    count = len(sent)
    await wait_for(lambda: not any(t.get_name() == "vrrp-status" for t in asyncio.all_tasks()))
    reporter.changed()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(sent) == count  # stopped: no tick left, and a change sends nothing


async def test_a_handover_set_is_fed_to_the_engine_and_answered_with_the_status(
    lab: Harness,
) -> None:
    engine = await lab.start(config({"VI_1": instance(1, vip(10)), "VI_2": instance(2, vip(20))}))
    channel = Channel([SetHandover(("VI_2",)), SetHandover(())])
    first: list[dict[str, dict[str, Any]]] = []
    original = channel.send

    def send(message: Message) -> None:
        original(message)
        first.append(instances(channel.answers[-1]))

    channel.send = send  # type: ignore[method-assign]
    await follow_parent(engine, channel, StaticLinks(engine, set()))
    assert len(first) == 2
    assert first[0]["VI_2"]["handed_over"] and not first[0]["VI_1"]["handed_over"]
    assert not first[1]["VI_2"]["handed_over"]
    assert engine.handed_over == frozenset()


async def test_a_handover_answer_goes_through_the_reporter(lab: Harness) -> None:
    sent: list[Message] = []
    reporter = StatusReporter(sent.append)
    engine = await lab.start(
        config({"VI_1": instance(1, vip(10))}), on_status_change=reporter.changed
    )
    reporter.start(engine)
    channel = Channel([SetHandover(("VI_1",))])
    await follow_parent(
        engine,
        channel,
        StaticLinks(engine, set()),
        reporter,
    )
    assert len(sent) == 2 and instances(sent[1])["VI_1"]["handed_over"]
    # The change the engine reported is the one just sent: no second status for it.
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(sent) == 2
    reporter.stop()


def test_handed_over_instances_are_named_on_the_command_line() -> None:
    args = build_parser().parse_args(
        ["--config-fd", "3", "--handed-over", "VI_1", "--handed-over", "VI_2"]
    )
    assert args.handed_over == ["VI_1", "VI_2"]
    assert build_parser().parse_args(["--config-fd", "3"]).handed_over == []
