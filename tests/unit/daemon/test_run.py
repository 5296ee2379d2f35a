"""The parent's state (lvsha.daemon.run): reloads validate off the supervising loop, the last
VRRP states go to a starting checker, a dead VRRP child's instances read INITIALIZE."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from lvsha.config import ConfigError, LvshaConfig, load_text
from lvsha.daemon import overrides, reload, run
from lvsha.daemon.reload_plan import reload_plan
from lvsha.daemon.supervisor import Supervisor
from lvsha.messages import Message, SetOverrides, VrrpRoles, VrrpStateChanged


class RecordingSupervisor(Supervisor):
    def __init__(self) -> None:
        super().__init__([])
        self.sent: list[tuple[str, Message]] = []

    def send(self, child_name: str, message: Message) -> bool:
        self.sent.append((child_name, message))
        return True


TEXT = """\
vrrp_instances:
  VI_1: {interface: eth0, virtual_router_id: 51, priority: 150, virtual_ipaddresses: [10.0.0.1]}
"""


def parent(tmp_path: Path) -> tuple[run._Parent, RecordingSupervisor]:
    path = str(tmp_path / "lvsha.yaml")
    Path(path).write_text(TEXT)
    running = reload.Running.start(path, TEXT, load_text(TEXT, path), 1, reload.digest_of(TEXT))
    state = run._Parent(
        running,
        tmp_path,
        1 << 20,
        dry_run=True,
        state_path=tmp_path / "state" / "overrides.json",
        state=overrides.State(),
    )
    supervisor = RecordingSupervisor()
    state.supervisor = supervisor
    return state, supervisor


async def test_a_reload_validates_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # However long validation takes, the supervising loop keeps running (a child that dies
    # meanwhile is restarted on time: issue 9, finding 5).
    loop_thread = threading.current_thread()
    release = threading.Event()
    threads: list[threading.Thread] = []

    def slow_validate(path: str, max_size: int) -> tuple[str, LvshaConfig]:
        threads.append(threading.current_thread())
        release.wait(10)
        raise ConfigError([])

    monkeypatch.setattr(reload, "validate", slow_validate)
    state, _ = parent(tmp_path)
    state.on_sighup()
    state.on_sighup()  # before the file is read: the same pass covers it
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not threads:  # the loop runs while validation waits in its thread
        assert loop.time() < deadline, "validation did not start"
        await asyncio.sleep(0.01)
    state.on_sighup()  # while the file is being read: one more pass after this one
    release.set()
    assert state._signalled is not None
    await asyncio.wait_for(state._signalled, 10)
    assert len(threads) == 2
    assert all(thread is not loop_thread for thread in threads)


def test_a_starting_checker_hears_the_last_states_first(tmp_path: Path) -> None:
    state, supervisor = parent(tmp_path)
    state.on_started("checker")
    state.on_message("vrrp", VrrpStateChanged("VI_2", "INITIALIZE", "BACKUP", "startup", 100))
    state.on_message("vrrp", VrrpStateChanged("VI_1", "BACKUP", "MASTER", "timer", 150))
    supervisor.sent.clear()
    state.on_started("checker")
    # The roles first; then the overrides in force (none here).
    assert supervisor.sent[0] == ("checker", VrrpRoles((("VI_1", "MASTER"), ("VI_2", "BACKUP"))))
    assert [(child, type(m)) for child, m in supervisor.sent[1:]] == [("checker", SetOverrides)]
    assert state.events.seq == 2


def test_a_dead_vrrp_child_leaves_its_instances_initialize(tmp_path: Path) -> None:
    state, supervisor = parent(tmp_path)
    state.on_message("vrrp", VrrpStateChanged("VI_1", "BACKUP", "MASTER", "timer", 150))
    supervisor.sent.clear()
    state.on_exited("vrrp")
    assert supervisor.sent == [
        ("checker", VrrpStateChanged("VI_1", "MASTER", "INITIALIZE", "VRRP process exited", 0))
    ]
    state.on_exited("checker")  # changes nothing
    assert state.roles == {"VI_1": "INITIALIZE"}


def test_an_applied_reload_restarts_children_from_the_new_snapshot_and_renames_roles(
    tmp_path: Path,
) -> None:
    state, _ = parent(tmp_path)
    supervisor = RecordingSupervisor()
    supervisor._children = [
        Supervisor([spec])._children[0] for spec in state.children(state.running)
    ]
    state.supervisor = supervisor
    old = state.running
    state.on_message("vrrp", VrrpStateChanged("VI_1", "BACKUP", "MASTER", "timer", 150))
    text = TEXT.replace("VI_1", "web").replace("priority: 150", "priority: 160")
    new = reload.Running.start(old.path, text, load_text(text, old.path), 2, reload.digest_of(text))
    plan = reload_plan(old.config, new.config)
    state._applied(old, new, plan)
    (spec,) = supervisor.specs()
    assert spec.name == "vrrp"
    # A VRRP child restarted after this reload reads the new configuration, not the first.
    assert spec.pass_fds == (new.vrrp_snapshot,)
    assert spec.argv[spec.argv.index("--config-fd") + 1] == str(new.vrrp_snapshot)
    # The renamed instance keeps its last state under its new name, for a restarting checker.
    assert state.roles == {"web": "MASTER"}
