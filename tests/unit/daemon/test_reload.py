"""The parent's side of a reload: validate, plan, apply child by child, roll back on refusal."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Callable
from pathlib import Path

from lvsha.config import load_text
from lvsha.daemon.child import read_snapshot
from lvsha.daemon.reload import Reloader, Running, digest_of, renamed_instances
from lvsha.messages import ApplyConfig, ChildReady, ConfigApplied, Message, for_vrrp

VRRP = """\
vrrp_instances:
  {name}:
    interface: eth0
    virtual_router_id: 51
    priority: {priority}
    virtual_ipaddresses: [10.0.0.100/24]
"""

SERVICE = """\
virtual_servers:
  - address: 10.0.0.100
    protocol: TCP
    port: 80
    real_servers:
      - address: 192.168.1.2
"""


def config_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "lvsha.yaml"
    path.write_text(text)
    return str(path)


class FakeChildren:
    """Children that answer each ApplyConfig as `verdicts` says (default: applied)."""

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self.received: list[tuple[str, ApplyConfig]] = []
        self.verdicts: dict[str, Callable[[ApplyConfig], ConfigApplied | None]] = {}
        self.added: list[tuple[str, int]] = []
        self.removed: list[str] = []
        self.reloader: Reloader | None = None

    def send(self, child: str, message: Message) -> bool:
        if child not in self.names:
            return False
        assert isinstance(message, ApplyConfig)
        self.received.append((child, message))
        verdict = self.verdicts.get(child)
        answer = ConfigApplied(message.generation, True) if verdict is None else verdict(message)
        if answer is not None:
            assert self.reloader is not None
            asyncio.get_running_loop().call_soon(self.reloader.child_message, child, answer)
        return True

    def add(self, child: str, running: Running) -> None:
        self.added.append((child, running.generation))
        self.names.append(child)
        assert self.reloader is not None
        asyncio.get_running_loop().call_soon(self.reloader.child_message, child, ChildReady())

    async def remove(self, child: str) -> None:
        self.removed.append(child)
        self.names.remove(child)


def make_reloader(
    tmp_path: Path, text: str, children: FakeChildren
) -> tuple[Reloader, list[tuple[Running, Running]]]:
    path = config_file(tmp_path, text)
    running = Running.start(path, text, load_text(text, path), 1, digest_of(text))
    applied: list[tuple[Running, Running]] = []
    reloader = Reloader(
        running,
        1 << 20,
        send=children.send,
        children=lambda: list(children.names),
        add_child=children.add,
        remove_child=children.remove,
        on_applied=lambda old, new, plan: applied.append((old, new)),
    )
    children.reloader = reloader
    return reloader, applied


async def test_a_plan_changes_nothing(tmp_path: Path) -> None:
    children = FakeChildren(["vrrp", "checker"])
    reloader, applied = make_reloader(
        tmp_path, VRRP.format(name="VI", priority=100) + SERVICE, children
    )
    other = tmp_path / "other.yaml"
    other.write_text(VRRP.format(name="VI", priority=150) + SERVICE)
    answer = await reloader.reload(str(other), plan_only=True)
    assert answer.outcome == "plan"
    assert answer.plan is not None and len(answer.plan.changes) == 1
    assert "priority" in answer.plan.text()
    assert answer.generation == 1
    assert children.received == [] and applied == []


async def test_an_invalid_file_is_refused_with_every_problem_located(tmp_path: Path) -> None:
    children = FakeChildren(["vrrp"])
    text = VRRP.format(name="VI", priority=100)
    reloader, applied = make_reloader(tmp_path, text, children)
    Path(reloader.running.path).write_text(
        text.replace("priority: 100", "priority: 300") + "x: 1\n"
    )
    answer = await reloader.reload()
    assert answer.outcome == "invalid"
    assert answer.errors[0].startswith(f"{reloader.running.path}:5:")
    assert "priority" in answer.errors[0]
    assert any("x" in e for e in answer.errors[1:-1])
    assert answer.errors[-1] == f"{reloader.running.path}: 2 errors"
    assert answer.generation == 1 and children.received == [] and applied == []


async def test_apply_goes_checker_first_and_gives_vrrp_no_virtual_servers(tmp_path: Path) -> None:
    children = FakeChildren(["vrrp", "checker"])
    reloader, applied = make_reloader(
        tmp_path, VRRP.format(name="VI", priority=100) + SERVICE, children
    )
    new_text = VRRP.format(name="web", priority=100) + SERVICE.replace("192.168.1.2", "192.168.1.3")
    Path(reloader.running.path).write_text(new_text)
    answer = await reloader.reload()
    assert answer.outcome == "applied", answer.errors
    assert answer.generation == 2 and answer.digest == digest_of(new_text)
    assert [child for child, _ in children.received] == ["checker", "vrrp"]
    checker_config = children.received[0][1].config()
    vrrp_config = children.received[1][1].config()
    assert len(checker_config.virtual_servers) == 1
    assert vrrp_config.virtual_servers == [] and list(vrrp_config.vrrp_instances) == ["web"]
    assert {m.generation for _, m in children.received} == {2}
    ((old, new),) = applied
    assert old.generation == 1 and new.generation == 2
    # Children restarted from now on read the new configuration; the VRRP child's without
    # the virtual servers.
    assert pickle.loads(read_snapshot(new.snapshot)) == new.config
    assert pickle.loads(read_snapshot(new.vrrp_snapshot)) == for_vrrp(new.config)
    assert reloader.running is new


async def test_a_refusal_rolls_back_the_children_that_applied(tmp_path: Path) -> None:
    children = FakeChildren(["vrrp", "checker"])
    text = VRRP.format(name="VI", priority=100) + SERVICE
    reloader, applied = make_reloader(tmp_path, text, children)
    children.verdicts["vrrp"] = lambda m: ConfigApplied(
        m.generation, False, ("eth0: cannot add 10.0.0.101: refused",)
    )
    Path(reloader.running.path).write_text(text.replace("priority: 100", "priority: 110"))
    answer = await reloader.reload()
    assert answer.outcome == "failed"
    assert answer.errors == ["vrrp: eth0: cannot add 10.0.0.101: refused"]
    assert answer.left == []
    assert [(c, m.generation) for c, m in children.received] == [
        ("checker", 2),
        ("vrrp", 2),
        ("checker", 1),
    ]
    # The rollback hands the checker the running configuration again.
    assert children.received[2][1].config() == reloader.running.config
    assert answer.generation == 1 and applied == []


async def test_a_failed_rollback_says_what_is_left(tmp_path: Path) -> None:
    children = FakeChildren(["vrrp", "checker"])
    text = VRRP.format(name="VI", priority=100) + SERVICE
    reloader, _ = make_reloader(tmp_path, text, children)
    children.verdicts["vrrp"] = lambda m: ConfigApplied(m.generation, False, ("no",))
    children.verdicts["checker"] = lambda m: ConfigApplied(
        m.generation, m.generation == 2, () if m.generation == 2 else ("kernel said no",)
    )
    Path(reloader.running.path).write_text(text.replace("priority: 100", "priority: 110"))
    answer = await reloader.reload()
    assert answer.outcome == "failed"
    assert len(answer.left) == 1
    assert answer.left[0].startswith("checker: runs generation 2")
    assert "kernel said no" in answer.left[0]


async def test_a_child_that_dies_while_applying_fails_the_reload(tmp_path: Path) -> None:
    children = FakeChildren(["vrrp"])
    text = VRRP.format(name="VI", priority=100)
    reloader, _ = make_reloader(tmp_path, text, children)

    def die(message: ApplyConfig) -> None:
        asyncio.get_running_loop().call_soon(reloader.child_exited, "vrrp")

    children.verdicts["vrrp"] = die
    Path(reloader.running.path).write_text(text.replace("priority: 100", "priority: 110"))
    answer = await asyncio.wait_for(reloader.reload(), 5)
    assert answer.outcome == "failed"
    assert answer.errors == ["vrrp: the vrrp process exited while applying"]


async def test_only_the_running_file_is_applied(tmp_path: Path) -> None:
    children = FakeChildren(["vrrp"])
    reloader, _ = make_reloader(tmp_path, VRRP.format(name="VI", priority=100), children)
    other = tmp_path / "other.yaml"
    other.write_text(VRRP.format(name="VI", priority=150))
    answer = await reloader.reload(str(other))
    assert answer.outcome == "refused"
    assert "use --plan" in answer.errors[0]
    assert children.received == []


async def test_a_first_virtual_server_starts_the_checker_and_the_last_stops_it(
    tmp_path: Path,
) -> None:
    children = FakeChildren(["vrrp"])
    text = VRRP.format(name="VI", priority=100)
    reloader, _ = make_reloader(tmp_path, text, children)
    Path(reloader.running.path).write_text(text + SERVICE)
    answer = await reloader.reload()
    assert answer.outcome == "applied", answer.errors
    assert children.added == [("checker", 2)]
    assert [c for c, _ in children.received] == ["vrrp"]
    Path(reloader.running.path).write_text(text)
    answer = await reloader.reload()
    assert answer.outcome == "applied" and answer.generation == 3
    assert children.removed == ["checker"]


async def test_reloads_run_one_at_a_time(tmp_path: Path) -> None:
    children = FakeChildren(["vrrp"])
    text = VRRP.format(name="VI", priority=100)
    reloader, applied = make_reloader(tmp_path, text, children)
    Path(reloader.running.path).write_text(text.replace("priority: 100", "priority: 110"))
    answers = await asyncio.gather(reloader.reload(), reloader.reload())
    assert [a.generation for a in answers] == [2, 3]
    assert [new.generation for _, new in applied] == [2, 3]
    assert reloader.counts["applied"] == 2


def test_renamed_instances_are_matched_by_identity() -> None:
    old = load_text(VRRP.format(name="VI", priority=100))
    new = load_text(VRRP.format(name="web", priority=100))
    assert renamed_instances(old, new) == {"VI": "web"}
    moved = load_text(VRRP.format(name="web", priority=100).replace("eth0", "eth1"))
    assert renamed_instances(old, moved) == {}
