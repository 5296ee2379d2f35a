"""The parent's side of the control API: overrides kept in the state file and sent to the
checker, status assembled from the children's reports, handovers waited for."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from lvsha.config import load_text
from lvsha.daemon import overrides as ov
from lvsha.daemon.operations import OperationError, Operations
from lvsha.daemon.reload import Running, digest_of
from lvsha.messages import (
    CheckerStatus,
    Message,
    OverridesApplied,
    SetHandover,
    SetOverrides,
    StatusRequest,
    VrrpStatus,
)
from tests.tools import api_schema

TEXT = """\
vrrp_instances:
  VI_1: {interface: eth0, virtual_router_id: 51, priority: 150, advert_interval: 0.1, version: 3,
         virtual_ipaddresses: [10.0.0.1]}
  VI_2: {interface: eth1, virtual_router_id: 52, priority: 150, advert_interval: 0.1, version: 3,
         virtual_ipaddresses: [10.0.1.1]}
  VI_3: {interface: eth2, virtual_router_id: 53, priority: 150, advert_interval: 0.1, version: 3,
         virtual_ipaddresses: [10.0.2.1]}
sync_groups:
  G: {instances: [VI_1, VI_2]}
virtual_servers:
  - name: web
    address: 192.0.2.10
    port: 80
    protocol: TCP
    real_servers:
      - {address: 10.1.0.21, port: 80}
      - {address: 10.1.0.22, port: 80}
  - address: 192.0.2.10
    port: 443
    protocol: TCP
    real_servers:
      - {address: 10.1.0.21, port: 443}
"""


class Children:
    """Records what the operations send; the checker answers as the real one would."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Message]] = []
        self.running = ["vrrp", "checker"]
        self.ops: Operations | None = None
        self.checker_body: dict[str, Any] = {"virtual_servers": []}
        self.vrrp_answer: list[dict[str, Any]] | None = None

    def send(self, child: str, message: Message) -> bool:
        if child not in self.running:
            return False
        self.sent.append((child, message))
        loop = asyncio.get_running_loop()
        ops = self.ops
        assert ops is not None
        match message:
            case StatusRequest(serial=serial):
                body = json.dumps(self.checker_body)
                loop.call_soon(ops.child_message, "checker", CheckerStatus(serial, body))
            case SetOverrides(serial=serial):
                loop.call_soon(ops.child_message, "checker", OverridesApplied(serial))
            case SetHandover() if self.vrrp_answer is not None:
                body = json.dumps({"instances": self.vrrp_answer})
                loop.call_soon(ops.child_message, "vrrp", VrrpStatus(body))
        return True

    def of(self, kind: type[Message]) -> list[Message]:
        return [message for _, message in self.sent if isinstance(message, kind)]


@pytest.fixture
def running(tmp_path: Path) -> Running:
    path = str(tmp_path / "lvsha.yaml")
    return Running.start(path, TEXT, load_text(TEXT, path), 4, digest_of(TEXT))


def operations(tmp_path: Path, running: Running, children: Children) -> Operations:
    ops = Operations(
        tmp_path / "state" / ov.STATE_FILE,
        ov.State(),
        running=lambda: running,
        send=children.send,
        children=lambda: list(children.running),
        host="director-a",
    )
    children.ops = ops
    return ops


async def test_a_drain_is_written_then_sent_and_a_repeat_changes_nothing(
    tmp_path: Path, running: Running
) -> None:
    children = Children()
    ops = operations(tmp_path, running, children)
    selector = ov.Selector("10.1.0.21", 80, "web")
    answer = await ops.set_admin(ov.Mode.DRAIN, selector, "disk", "root (uid 0)")
    api_schema.check("overrides", answer)
    assert answer["changed"] is True and answer["generation"] == 4
    assert answer["selected"] == ["web 10.1.0.21:80"]
    saved = ov.load(ops.state_path)
    assert [(o.mode, o.selector, o.reason) for o in saved.overrides] == [
        (ov.Mode.DRAIN, selector, "disk")
    ]
    (sent,) = children.of(SetOverrides)
    assert isinstance(sent, SetOverrides) and ov.decode(sent.body) == saved.overrides

    again = await ops.set_admin(ov.Mode.DRAIN, selector, "other reason", "root (uid 0)")
    assert again["changed"] is False
    assert len(children.of(SetOverrides)) == 1
    assert ov.load(ops.state_path).overrides[0].reason == "disk"


async def test_ready_of_one_narrows_an_override_of_every_virtual_server(
    tmp_path: Path, running: Running
) -> None:
    children = Children()
    ops = operations(tmp_path, running, children)
    everywhere = ov.Selector("10.1.0.21")
    assert (await ops.set_admin(ov.Mode.MAINT, everywhere, "", "root"))["selected"] == [
        "web 10.1.0.21:80",
        "192.0.2.10:443/tcp 10.1.0.21:443",
    ]
    answer = await ops.set_admin(None, ov.Selector("10.1.0.21", 80, "web"), "", "root")
    assert answer["changed"] is True
    (left,) = ops.state.overrides
    assert (left.mode, left.selector) == (
        ov.Mode.MAINT,
        ov.Selector("10.1.0.21", 443, "192.0.2.10:443/tcp"),
    )
    assert ops.plan_lines(running.config) == [
        "maint 10.1.0.21:443 in 192.0.2.10:443/tcp (selects 1 real server) by root"
    ]


@pytest.mark.parametrize(
    ("selector", "error"),
    [
        (ov.Selector("10.1.0.99"), "no real server 10.1.0.99 in every virtual server"),
        (ov.Selector("10.1.0.21", 81, "web"), "no real server 10.1.0.21:81 in web"),
        (
            ov.Selector("10.1.0.21", None, "api"),
            "no virtual server 'api': this configuration has 192.0.2.10:443/tcp, web",
        ),
    ],
)
async def test_a_selector_that_selects_nothing_is_a_404_and_nothing_changes(
    tmp_path: Path, running: Running, selector: ov.Selector, error: str
) -> None:
    children = Children()
    ops = operations(tmp_path, running, children)
    with pytest.raises(OperationError) as raised:
        await ops.set_admin(ov.Mode.DRAIN, selector, "", "root")
    assert (raised.value.status, str(raised.value)) == (404, error)
    assert children.sent == [] and not ops.state_path.exists()


async def test_a_failing_state_file_write_changes_nothing(
    tmp_path: Path, running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    children = Children()
    ops = operations(tmp_path, running, children)

    def full(path: Path, state: ov.State) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ov, "save", full)
    with pytest.raises(OperationError) as raised:
        await ops.set_admin(ov.Mode.DRAIN, ov.Selector("10.1.0.21"), "", "root")
    assert raised.value.status == 500
    assert "No space left on device; nothing changed" in str(raised.value)
    assert ops.state.overrides == [] and children.sent == []


async def test_concurrent_status_calls_share_one_checker_request(
    tmp_path: Path, running: Running
) -> None:
    children = Children()
    ops = operations(tmp_path, running, children)
    ops.child_message("vrrp", VrrpStatus(json.dumps({"instances": []})))
    answers = await asyncio.gather(*(ops.status() for _ in range(20)))
    assert len(children.of(StatusRequest)) == 1
    for answer in answers:
        api_schema.check("status", answer)
        assert answer["host"] == "director-a" and answer["generation"] == 4
        assert answer["services"]["error"] is None


async def test_status_says_why_the_checker_view_is_missing(
    tmp_path: Path, running: Running
) -> None:
    children = Children()
    children.running = ["vrrp"]
    ops = operations(tmp_path, running, children)
    answer = await ops.status()
    api_schema.check("status", answer)
    assert answer["services"]["error"] == "the checker process is not running (restarting?)"
    assert answer["vrrp"] == {"updated_at": None, "instances": []}


def instance(name: str, state: str, handed_over: bool, reason: str = "test") -> dict[str, Any]:
    return {
        "name": name, "interface": "eth0", "vrid": 51, "family": "ipv4", "version": 3,
        "state": state, "since": 1.0, "reason": reason, "base_priority": 150,
        "effective_priority": 150, "trackers": [], "handed_over": handed_over,
        "master": None, "vips": ["10.0.0.1/32"], "advert_interval": 0.1, "adverts_sent": 1,
        "adverts_received": 0, "drops": {}, "fault_reasons": [],
    }  # fmt: skip


async def test_a_handover_takes_the_whole_sync_group_and_waits_for_it(
    tmp_path: Path, running: Running
) -> None:
    children = Children()
    children.vrrp_answer = [instance(n, "BACKUP", True) for n in ("VI_1", "VI_2")]
    ops = operations(tmp_path, running, children)
    answer = await ops.handover("VI_2", False, "root (uid 0)")
    api_schema.check("overrides", answer)
    assert answer["selected"] == ["VI_1", "VI_2"]
    assert [i["state"] for i in answer["instances"]] == ["BACKUP", "BACKUP"]
    assert children.of(SetHandover) == [SetHandover(("VI_1", "VI_2"))]
    assert set(ov.load(ops.state_path).handover) == {"VI_1", "VI_2"}


async def test_a_handover_nobody_took_is_dropped_from_the_state(
    tmp_path: Path, running: Running
) -> None:
    children = Children()
    gave_up = "handover failed: no new master heard within the master down interval"
    children.vrrp_answer = [instance("VI_3", "MASTER", False, gave_up)]
    ops = operations(tmp_path, running, children)
    # The report from before the change says MASTER too: it must not count as the answer.
    before = [instance("VI_3", "MASTER", False, "master down timer expired")]
    ops.child_message("vrrp", VrrpStatus(json.dumps({"instances": before})))
    answer = await ops.handover("VI_3", False, "root (uid 0)")
    assert answer["instances"][0]["reason"] == gave_up
    assert answer["instances"][0]["state"] == "MASTER"
    assert ops.state.handover == {} and ov.load(ops.state_path).handover == {}
    assert children.of(SetHandover) == [SetHandover(("VI_3",)), SetHandover(())]


async def test_a_handover_that_never_settles_times_out(
    tmp_path: Path, running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("lvsha.daemon.operations.HANDOVER_MARGIN", 0.1)
    children = Children()
    children.vrrp_answer = [instance("VI_3", "RELEASING", True)]
    ops = operations(tmp_path, running, children)
    with pytest.raises(OperationError) as raised:
        await ops.handover("VI_3", False, "root (uid 0)")
    assert raised.value.status == 504 and "did not settle" in str(raised.value)


async def test_an_unknown_instance_is_a_404(tmp_path: Path, running: Running) -> None:
    children = Children()
    ops = operations(tmp_path, running, children)
    with pytest.raises(OperationError) as raised:
        await ops.handover("VI_9", False, "root")
    assert str(raised.value) == "no VRRP instance 'VI_9': this configuration has VI_1, VI_2, VI_3"
    assert children.sent == []


async def test_a_starting_child_is_told_what_is_in_force(tmp_path: Path, running: Running) -> None:
    children = Children()
    ops = operations(tmp_path, running, children)
    ops.state.handover = {"VI_3": "root"}
    ops.state.overrides = [ov.Override(ov.Mode.DRAIN, ov.Selector("10.1.0.22"))]
    ops.child_started("vrrp")
    ops.child_started("checker")
    assert children.of(SetHandover) == [SetHandover(("VI_3",))]
    (sent,) = children.of(SetOverrides)
    assert isinstance(sent, SetOverrides) and ov.decode(sent.body) == ops.state.overrides
