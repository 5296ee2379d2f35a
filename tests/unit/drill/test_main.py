"""The drill's setup from the lab configs, adapted copies, and its interrupt handling."""

from __future__ import annotations

import argparse
import signal
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from lvsha.config import ConfigError, load_file
from lvsha.drill.main import (
    DEFAULT_CONFIGS,
    REALTIME_PRIORITY,
    DrillOptions,
    InterruptGuard,
    SetupError,
    adapt_config,
    add_arguments,
    options_from_args,
    prepare,
    run_drill,
)
from lvsha.drill.scenarios import Scenario


def test_the_lab_configs_make_one_election(tmp_path: Path) -> None:
    setup = prepare(DrillOptions(), tmp_path)
    assert setup.election.vrid == 42
    assert setup.election.vip == IPv4Interface("192.0.2.100/24")
    assert setup.election.advert_interval == pytest.approx(0.1)
    assert setup.version == 3
    assert setup.client == IPv4Interface("192.0.2.1/24")
    a, b = setup.directors
    assert (a.name, a.address, a.priority) == ("a", IPv4Interface("192.0.2.11/24"), 150)
    assert (b.name, b.address, b.priority) == ("b", IPv4Interface("192.0.2.12/24"), 100)
    assert a.config == DEFAULT_CONFIGS[0]
    assert not list(tmp_path.iterdir())  # nothing adapted, nothing written


@pytest.mark.parametrize(("interval", "version"), [(1.0, 2), (0.1, 3), (0.02, 3)])
def test_benchmark_settings_run_adapted_copies(
    tmp_path: Path, interval: float, version: int
) -> None:
    options = DrillOptions(advert_interval=interval, vrrp_version=version)
    setup = prepare(options, tmp_path)
    assert setup.election.advert_interval == pytest.approx(interval)
    assert setup.version == version
    for director in setup.directors:
        assert director.config.parent == tmp_path
        instance = load_file(director.config).vrrp_instances["VI_LAB"]
        assert instance.advert_interval == pytest.approx(interval)
        assert instance.version == version
    assert [d.priority for d in setup.directors] == [150, 100]


def write_config(path: Path, priority: int, interface: str = "eth0", vrid: int = 42) -> Path:
    path.write_text(
        "vrrp_instances:\n"
        "  VI_LAB:\n"
        f"    interface: {interface}\n"
        f"    virtual_router_id: {vrid}\n"
        f"    priority: {priority}\n"
        "    version: 3\n"
        "    advert_interval: 100ms\n"
        "    mcast_src_ip: 192.0.2.21\n"
        "    virtual_ipaddresses: [192.0.2.100/24]\n",
        encoding="utf-8",
    )
    return path


def test_mcast_src_ip_gives_the_director_address(tmp_path: Path) -> None:
    configs = (write_config(tmp_path / "a.yaml", 200), write_config(tmp_path / "b.yaml", 100))
    setup = prepare(DrillOptions(configs=configs), tmp_path)
    assert setup.directors[0].address.ip == IPv4Address("192.0.2.21")


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ({"priority": 200}, "different priorities"),
        ({"priority": 100, "vrid": 43}, "must agree"),
        ({"priority": 100, "interface": "eth1"}, "only eth0"),
    ],
)
def test_configs_the_lab_cannot_hold(tmp_path: Path, second: dict[str, int], message: str) -> None:
    first = write_config(tmp_path / "a.yaml", 200)
    other = write_config(tmp_path / "b.yaml", **second)  # type: ignore[arg-type]
    with pytest.raises(SetupError, match=message):
        prepare(DrillOptions(configs=(first, other)), tmp_path)


def test_an_invalid_adapted_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        prepare(DrillOptions(advert_interval=0.001), tmp_path)


def test_a_director_command_without_the_config_is_refused() -> None:
    assert run_drill(DrillOptions(director_command=("true",))) == 2


def test_command_line_options() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = options_from_args(
        parser.parse_args(
            [
                "--advert-interval", "0.02", "--vrrp-version", "3", "--repetitions", "5",
                "--scenario", "kill", "--scenario", "master-returns",
                "--director-command", "python3 standin.py {config} --run-dir '{run_dir}'",
                "--json",
            ]
        )
    )  # fmt: skip
    assert options.advert_interval == 0.02
    assert options.vrrp_version == 3
    assert options.repetitions == 5
    assert options.scenarios == (Scenario.KILL, Scenario.MASTER_RETURNS)
    assert options.director_command == (
        "python3", "standin.py", "{config}", "--run-dir", "{run_dir}",
    )  # fmt: skip
    assert options.json
    assert options.configs == DEFAULT_CONFIGS
    # Another daemon is not assumed to write lvsha's event stream.
    assert not options.follows_event_stream


@pytest.mark.parametrize(
    ("arguments", "follows"),
    [
        ([], True),
        (["--no-event-stream"], False),
        (["--director-command", "standin {config}"], False),
        (["--director-command", "lvsha-wrapper {config} {run_dir}", "--event-stream"], True),
    ],
)
def test_the_event_stream_is_followed_for_lvsha_or_when_asked(
    arguments: list[str], follows: bool
) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert options_from_args(parser.parse_args(arguments)).follows_event_stream is follows


def test_interrupt_during_a_shielded_step_arrives_after_it() -> None:
    guard = InterruptGuard()
    guard.install()
    finished = False
    try:
        with pytest.raises(KeyboardInterrupt), guard.shielded():
            signal.raise_signal(signal.SIGINT)
            finished = True
    finally:
        guard.restore()
    assert finished


def test_interrupts_while_closing_are_ignored() -> None:
    guard = InterruptGuard()
    guard.install()
    try:
        with guard.closing():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGTERM)
    finally:
        guard.restore()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_realtime_priority_set_or_removed_in_adapted_copies(tmp_path: Path) -> None:
    off = prepare(DrillOptions(realtime=False), tmp_path)
    assert load_file(off.directors[0].config).global_.vrrp.realtime_priority is None
    bare = write_config(tmp_path / "bare.yaml", 200)
    on = tmp_path / "on.yaml"
    adapt_config(bare, on, None, None, realtime=True)
    assert load_file(on).global_.vrrp.realtime_priority == REALTIME_PRIORITY


def test_an_instance_with_twenty_vips(tmp_path: Path) -> None:
    setup = prepare(DrillOptions(vips=20), tmp_path)
    assert setup.election.vip == IPv4Interface("192.0.2.100/24")
    assert len(setup.election.vips) == 20
    assert setup.election.more_vips[-1] == IPv4Interface("192.0.2.119/24")


def test_more_vips_than_the_network_holds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match=r"leave 192\.0\.2\.0/24"):
        prepare(DrillOptions(vips=200), tmp_path)


def test_keepalived_directors_run_translated_configs(tmp_path: Path) -> None:
    options = DrillOptions(daemon="keepalived", advert_interval=1.0, vrrp_version=2)
    setup = prepare(options, tmp_path)
    a, b = setup.directors
    assert a.config.name == "director-a.keepalived.conf"
    assert "priority 150" in a.config.read_text() and "priority 100" in b.config.read_text()
    assert options.command[0] == "keepalived" and not options.follows_event_stream


def test_daemon_realtime_and_vips_options() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = options_from_args(
        parser.parse_args(["--daemon", "keepalived", "--no-realtime", "--vips", "20"])
    )
    assert (options.daemon, options.realtime, options.vips) == ("keepalived", False, 20)
    defaults = options_from_args(parser.parse_args([]))
    assert (defaults.daemon, defaults.realtime, defaults.vips) == ("lvsha", None, None)
    assert defaults.watch_vip


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_a_fault_delay_must_be_seconds_from_now(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--fault-after-advert", value])
    assert "--fault-after-advert" in capsys.readouterr().err
    assert (
        options_from_args(parser.parse_args(["--fault-after-advert", "0.05"])).fault_after_advert
        == 0.05
    )
