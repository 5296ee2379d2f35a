"""Bad configuration input is a located error, never a crash, a hang or an unbounded cost.

Issue 9, findings 5 and 9: each test here is one input that used to raise, hang or exhaust
memory, or a value that check-config passed and the daemon could not use.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsha.cli import byte_count, main
from lvsha.config import ConfigError, load_file, load_text
from lvsha.config.files import DEFAULT_MAX_SIZE
from lvsha.config.source import MAX_DEPTH, MAX_NODES, MAX_PROBLEMS
from lvsha.daemon.rundir import MAX_SOCKET_PATH, run_dir_problem
from lvsha.ipvs.specs import configured_services

INSTANCE = """\
vrrp_instances:
  VI_1:
    interface: eth0
    virtual_router_id: 51
    virtual_ipaddresses: [192.0.2.10/24]
"""

SERVICE = """\
virtual_servers:
  - address: 192.0.2.10
    port: 80
    protocol: TCP
    real_servers:
      - address: 10.0.0.1
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load_text(text, "t.yaml")
    return [str(p) for p in raised.value.problems]


def only_problem(text: str) -> str:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]


def position(text: str, snippet: str) -> str:
    """`line:col` of the first `snippet` in `text`."""
    index = text.index(snippet)
    line = text.count("\n", 0, index) + 1
    return f"{line}:{index - (text.rfind(chr(10), 0, index) + 1) + 1}"


# --- finding 5: alias bombs, recursive aliases, huge files


def alias_bomb(levels: int, width: int = 9) -> str:
    lines = [f"b0: &b0 [{', '.join(['x'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"b{level}: &b{level} [{', '.join([f'*b{level - 1}'] * width)}]")
    return INSTANCE + "bomb:\n" + "".join(f"  {line}\n" for line in lines)


@pytest.mark.parametrize("levels", [7, 9])
def test_alias_bomb_is_refused_at_the_alias_that_passes_the_budget(levels: int) -> None:
    text = alias_bomb(levels)
    problem = only_problem(text)
    # b(k) expands to 1 + 9 * b(k-1) nodes: find the first level over the budget
    expanded, level = 10, 0
    total = expanded
    while total + 1 + 9 * expanded <= MAX_NODES:
        expanded, level = 1 + 9 * expanded, level + 1
        total += expanded
    line = text.splitlines()[text[: text.index(f"b{level + 1}: ")].count("\n")]
    assert problem.startswith(f"t.yaml:{text[: text.index(line)].count(chr(10)) + 1}:")
    column = int(problem.split(":")[2])
    assert line[column - 1 :].startswith(f"*b{level}")
    assert f"more than {MAX_NODES:,} YAML nodes" in problem


def test_aliases_within_the_budget_still_work() -> None:
    text = INSTANCE.replace("[192.0.2.10/24]", "&vips [192.0.2.10/24]") + (
        "  VI_2:\n    interface: eth1\n    virtual_router_id: 52\n    virtual_ipaddresses: *vips\n"
    )
    config = load_text(text)
    assert config.vrrp_instances["VI_2"].virtual_ipaddresses[0].address.ip.exploded == (
        "192.0.2.10"
    )


@pytest.mark.parametrize(
    "text",
    ["a: &a [*a]\n", "a: &a {b: [1, {c: *a}]}\n", "a: &a\n  b: *a\n"],
    ids=["sequence", "nested", "block mapping"],
)
def test_recursive_alias_is_refused_where_it_stands(text: str) -> None:
    problem = only_problem(text)
    assert problem.startswith(f"t.yaml:{position(text, '*a')}: (top level): YAML: alias '*a'")
    assert "is inside the node it names" in problem


def test_undefined_and_redefined_anchors() -> None:
    assert "found undefined alias '*nope'" in only_problem("a: *nope\n")
    text = "a: &x 1\nb: &x 2\n"
    problem = only_problem(text)
    assert problem.startswith("t.yaml:2:4:")
    assert "anchor '&x' is defined twice (first at line 1)" in problem


def test_a_mistake_in_aliased_content_points_at_the_anchored_definition() -> None:
    text = (
        "defaults: &timing {interval: 5s, rize: 2}\n"
        + SERVICE
        + "        checks:\n          - {type: tcp, port: 80, interval: 1}\n"
        + "    check_defaults: *timing\n"
    )
    problems = problems_of(text)
    assert any(
        p.startswith(f"t.yaml:{position(text, 'rize')}: virtual_servers[0].check_defaults.rize:")
        for p in problems
    ), problems


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as f:
        f.truncate(50 * 1024 * 1024)  # sparse: 50 MB that cost nothing to write or skip
    with pytest.raises(ConfigError) as raised:
        load_file(path)
    (problem,) = raised.value.problems
    assert str(problem) == (
        f"{path}:1:1: (top level): the file is 52428800 bytes, more than the limit of 16 MiB: "
        "a configuration is far smaller, so check that this is the right file; if it is, use "
        "--max-config-size BYTES to raise the limit"
    )
    assert DEFAULT_MAX_SIZE == 16 * 1024 * 1024


def test_the_size_limit_counts_bytes_and_can_be_raised(tmp_path: Path) -> None:
    text = INSTANCE + "# " + "é" * 200 + "\n"  # 2 bytes per character
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    size = len(text.encode("utf-8"))
    with pytest.raises(ConfigError, match=f"the file is {size} bytes, more than the limit of 500"):
        load_file(path, max_size=500)
    with pytest.raises(ConfigError, match=f"the file is {size} bytes, more than the limit of"):
        load_text(text, "c.yaml", max_size=len(text))  # bytes count, not characters
    assert load_file(path, max_size=size).vrrp_instances
    assert load_text(text, "c.yaml", max_size=size).vrrp_instances


def test_check_config_takes_a_size_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(INSTANCE)
    assert main(["check-config", "--max-config-size", "100", str(path)]) == 1
    assert "more than the limit of 100 bytes" in capsys.readouterr().err
    assert main(["check-config", "--max-config-size", "1K", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: OK")
    with pytest.raises(SystemExit) as usage:
        main(["check-config", "--max-config-size", "lots", str(path)])
    assert usage.value.code == 2
    assert "'lots' is not a size" in capsys.readouterr().err


def test_size_units() -> None:
    assert byte_count("33554432") == 32 * 1024 * 1024
    assert byte_count("32M") == byte_count("32MiB") == byte_count("32mb") == 32 * 1024 * 1024
    assert byte_count("1G") == 1024**3
    assert byte_count("2k") == 2048


def test_hundreds_of_problems_are_listed_up_to_a_hundred() -> None:
    servers = "".join(f"      - {{address: 10.0.0.{n}.1}}\n" for n in range(250))
    text = SERVICE.replace("      - address: 10.0.0.1\n", servers)
    with pytest.raises(ConfigError) as raised:
        load_text(text, "t.yaml")
    error = raised.value
    assert error.total == 250
    assert len(error.problems) == MAX_PROBLEMS + 1
    assert error.problems[-1].message.startswith("and 150 more problems not listed")


# --- finding 9: values that raised, paths that hung


def test_integer_past_pythons_digit_limit_is_a_located_problem() -> None:
    text = INSTANCE.replace("virtual_router_id: 51", "virtual_router_id: " + "9" * 5000)
    problem = only_problem(text)
    assert problem.startswith(
        f"t.yaml:{position(text, '9999')}: vrrp_instances.VI_1.virtual_router_id: "
        "a number written with 5000 characters"
    )


def test_huge_hex_integer_does_not_break_the_message() -> None:
    text = INSTANCE + "    priority: 0x" + "f" * 20000 + "\n"
    problem = only_problem(text)
    assert "vrrp_instances.VI_1.priority: a number written with 20002 characters" in problem
    assert len(problem) < 300


@pytest.mark.parametrize("value", [".inf", "-.inf", "1e400", ".nan"])
def test_infinite_or_nan_interval_is_a_located_problem(value: str) -> None:
    text = INSTANCE + f"    advert_interval: {value}\n"
    problem = only_problem(text)
    assert problem.startswith(f"t.yaml:{position(text, value)}: vrrp_instances.VI_1.")
    assert "expected a finite number" in problem


def test_infinite_duration_as_a_string_is_refused() -> None:
    text = INSTANCE + "    preempt_delay: '" + "9" * 400 + "h'\n"
    assert "expected a finite number" in only_problem(text)


@pytest.mark.parametrize("style", ["flow", "block"])
def test_nesting_500_levels_is_refused_at_the_level_past_the_limit(style: str) -> None:
    if style == "flow":
        text = "a: " + "[" * 500 + "]" * 500 + "\n"
        # the root mapping is level 1: level MAX_DEPTH + 1 is bracket number MAX_DEPTH
        expected = f"1:{3 + MAX_DEPTH}"
    else:
        text = "".join("  " * level + f"k{level}:\n" for level in range(500))
        expected = position(text, f"k{MAX_DEPTH}:")
    problem = only_problem(text)
    assert problem.startswith(f"t.yaml:{expected}: (top level): YAML nesting deeper than 64")


def test_aliases_cannot_nest_past_the_depth_limit() -> None:
    deep = "{a: " * 40 + "1" + "}" * 40
    text = f"x: &deep {deep}\ny: [[[[[[[[[[[[[[[[[[[[[[[[[[[[*deep]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n"
    problem = only_problem(text)
    assert problem.startswith(f"t.yaml:{position(text, '*deep')}:")
    assert f"deeper than {MAX_DEPTH} levels" in problem


def test_dev_zero_is_refused_unread() -> None:
    with pytest.raises(ConfigError) as raised:
        load_file("/dev/zero")
    assert str(raised.value) == (
        "/dev/zero:1:1: (top level): cannot read the file: it is a character device; "
        "give the path of a regular YAML file"
    )


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="it is a directory"):
        load_file(tmp_path)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            load_file(fifo)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    # A thread, so that a regression hangs only the thread: the test fails at the deadline.
    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():
        with open(fifo, "w"):  # release the thread stuck in open()
            pass
        pytest.fail("load_file blocked on a FIFO")
    (error,) = outcome
    assert isinstance(error, ConfigError)
    assert "it is a FIFO (named pipe)" in str(error)


def test_bytes_that_are_not_utf8_are_located(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(INSTANCE.encode() + "    # caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as raised:
        load_file(path)
    assert str(raised.value).startswith(f"{path}:6:10: (top level): the file is not UTF-8 text")


@pytest.mark.parametrize(
    ("text", "at", "what"),
    [
        ("a: b\x01c\n", "1:5", "character U+0001 is not allowed"),
        ("a: \u00e9\x00\n", "1:5", "character U+0000 is not allowed"),
        ("a: \udc80\n", "1:4", "lone surrogate"),
        ("a: 1\n---\nb: 2\n", "2:1", "the file must hold one document"),
    ],
    ids=["control", "nul after non-ascii", "surrogate", "two documents"],
)
def test_text_the_parser_cannot_take_is_located(text: str, at: str, what: str) -> None:
    problem = only_problem(text)
    assert problem.startswith(f"t.yaml:{at}: (top level): ")
    assert what in problem


def real_server(extra: str) -> str:
    return SERVICE.replace(
        "      - address: 10.0.0.1\n", f"      - {{address: 10.0.0.1, {extra}}}\n"
    )


@pytest.mark.parametrize(
    ("text", "key", "limit"),
    [
        (real_server("upper_threshold: 4294967296"), "upper_threshold", 4294967295),
        (
            real_server("upper_threshold: 9, lower_threshold: 4294967296"),
            "lower_threshold",
            4294967295,
        ),
        (SERVICE + "    quorum: 4294967296\n", "quorum", 4294967295),
        (SERVICE + "    hysteresis: 4294967296\n", "hysteresis", 4294967295),
        (INSTANCE + "    advert_interval: 256\n", "advert_interval", 255),
    ],
    ids=["upper_threshold", "lower_threshold", "quorum", "hysteresis", "advert_interval"],
)
def test_values_the_kernel_or_the_wire_cannot_carry_are_refused(
    text: str, key: str, limit: int
) -> None:
    problem = only_problem(text)
    assert f".{key}: must be at most {limit}" in problem


def checked_service(check: str) -> str:
    return SERVICE + f"        checks: [{check}]\n"


def test_dns_names_that_no_query_can_carry_are_refused() -> None:
    long_label = "a" * 64 + ".example.com"
    problem = only_problem(checked_service(f"{{type: dns, port: 53, name: {long_label}}}"))
    assert ".checks[0].name: '" + long_label + "' is not a valid DNS name" in problem
    too_long = ".".join(["abcdefghi"] * 26)
    assert "not a valid DNS name" in only_problem(
        checked_service(f"{{type: dns, port: 53, name: {too_long}}}")
    )
    assert "not a valid DNS name" in only_problem(
        checked_service("{type: dns, port: 53, name: a..b}")
    )
    assert load_text(checked_service("{type: dns, port: 53, name: www.example.com.}"))


def test_udp_payload_larger_than_a_datagram_is_refused() -> None:
    problem = only_problem(checked_service("{type: udp, port: 53, payload: " + "x" * 65508 + "}"))
    assert ".checks[0].payload: 65508 bytes do not fit one UDP datagram (at most 65507)" in problem
    assert load_text(checked_service("{type: udp, port: 53, payload: " + "x" * 65507 + "}"))


def test_the_largest_accepted_values_reach_the_ipvs_model_intact() -> None:
    """Every integer at its accepted maximum converts to IPVS objects (which check the
    kernel's field widths): what check-config passes, the checker can apply."""
    text = (
        "virtual_servers:\n"
        "  - fwmark: 4294967295\n"
        "    persistence_timeout: 31536000\n"
        "    persistence_granularity: 32\n"
        "    quorum: 4294967295\n"
        "    hysteresis: 4294967294\n"
        "    sorry_server: {address: 10.0.0.9, port: 65535, weight: 65535}\n"
        "    real_servers:\n"
        "      - {address: 10.0.0.1, port: 65535, weight: 65535,\n"
        "         upper_threshold: 4294967295, lower_threshold: 4294967295}\n"
    )
    (service,) = configured_services(load_text(text))
    (real_server,) = service.spec.real_servers
    assert real_server.destination.upper_threshold == 4294967295


def test_lvsha_run_passes_the_size_limit_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[tuple[object, ...], dict[str, object]]] = []

    def fake_run(*args: object, **kwargs: object) -> int:
        calls.append((args, kwargs))
        return 0

    monkeypatch.setattr("lvsha.daemon.run.run", fake_run)
    run_dir = str(tmp_path / "run")
    assert main(["run", "c.yaml", "--run-dir", run_dir, "--max-config-size", "32M"]) == 0
    assert main(["run", "c.yaml", "--run-dir", run_dir]) == 0
    assert calls == [
        (
            ("c.yaml", run_dir, False),
            {"max_config_size": 32 * 1024 * 1024, "state_dir": "/var/lib/lvsha"},
        ),
        (
            ("c.yaml", run_dir, False),
            {"max_config_size": DEFAULT_MAX_SIZE, "state_dir": "/var/lib/lvsha"},
        ),
    ]


# --- the run directory


def test_run_dir_too_long_for_its_sockets() -> None:
    room = MAX_SOCKET_PATH - len("/control.sock")
    fits = "/" + "r" * (room - 1)
    assert run_dir_problem(fits) is None  # does not exist yet: lvsha creates it
    problem = run_dir_problem(fits + "r")
    assert problem is not None
    assert f"control.sock in it would be a {MAX_SOCKET_PATH + 1}-byte socket path" in problem
    assert f"use a run directory of at most {room} bytes" in problem


def test_run_dir_that_is_a_file(tmp_path: Path) -> None:
    regular = tmp_path / "file"
    regular.write_text("")
    assert run_dir_problem(str(regular)) == (
        f"run directory '{regular}': it exists and is not a directory"
    )
    assert run_dir_problem(str(regular / "below")) == (
        f"run directory '{regular / 'below'}': {regular} exists and is not a directory"
    )
    assert run_dir_problem(str(tmp_path)) is None


def test_lvsha_run_refuses_a_bad_run_dir_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(INSTANCE)
    long_dir = str(tmp_path / ("d" * 120))
    assert main(["run", str(config), "--run-dir", long_dir]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lvsha run: run directory '{long_dir}' is too long")
    assert not os.path.exists(long_dir)
    assert main(["run", str(config), "--run-dir", str(config)]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err


# --- fuzzing: whatever the input, ConfigError or a configuration, nothing else

FRAGMENTS = [
    *(f"{key}:" for key in ("global", "vrrp_instances", "virtual_servers", "VI_1", "checks")),
    *(
        f"{key}: "
        for key in (
            "interface",
            "virtual_router_id",
            "priority",
            "advert_interval",
            "virtual_ipaddresses",
            "address",
            "port",
            "protocol",
            "real_servers",
            "upper_threshold",
            "type",
            "interval",
            "<<",
        )
    ),
    *("eth0", "51", "255", "0x1f", "1e400", ".inf", ".nan", "-0", "1.5s", "100ms", "TCP", "tcp"),
    *("192.0.2.10/24", "10.0.0.1", "::1", "true", "yes", "~", "''", '"x"', "!!str 5", "! 5"),
    *("&a ", "*a", "&b ", "*b", "[", "]", "{", "}", ", ", "- ", "? ", ": ", "|", ">", "#c"),
    *("\n", "\n  ", "\n    ", "\n      ", "---", "...", "%YAML 1.2", "\t", "\\", "'", '"'),
    "9" * 5000,
    "0x" + "f" * 300,
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=60))
def test_fuzz_yaml_ish_text(fragments: list[str]) -> None:
    text = "".join(fragments)
    try:
        load_text(text, "fuzz.yaml")
    except ConfigError as exc:
        assert exc.problems and all(str(p).startswith("fuzz.yaml:") for p in exc.problems)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_fuzz_arbitrary_text(text: str) -> None:
    try:
        load_text(text, "fuzz.yaml")
    except ConfigError as exc:
        assert exc.problems


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_fuzz_arbitrary_bytes_from_a_file(data: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="lvsha-fuzz-") as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_bytes(data)
        try:
            load_file(path, max_size=300)
        except ConfigError as exc:
            assert exc.problems and all(str(p).startswith(str(path)) for p in exc.problems)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats()
        | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(["global", "vrrp_instances", "VI_1", "interface", "port", "x"]),
                children,
                max_size=4,
            )
        ),
        max_leaves=30,
    )
)
def test_fuzz_structures_through_the_model(value: object) -> None:
    """Well-formed YAML of any shape, with model keys where the model looks for them."""
    text = json.dumps({"vrrp_instances": {"VI_1": value}, "virtual_servers": [value]})
    try:
        load_text(text.replace("NaN", ".nan").replace("Infinity", ".inf"), "fuzz.yaml")
    except ConfigError as exc:
        assert exc.problems


def test_smtp_helo_names_that_would_break_the_command_are_refused() -> None:
    problem = only_problem(checked_service("{type: smtp, port: 25, helo_name: 'two words'}"))
    assert ".checks[0].helo_name: 'two words' is not a HELO name" in problem
    assert "is not a HELO name" in only_problem(
        checked_service('{type: smtp, port: 25, helo_name: "lb\\r\\nRCPT TO:<x>"}')
    )
    assert "is not a HELO name" in only_problem(
        checked_service("{type: smtp, port: 25, helo_name: ''}")
    )
    assert load_text(checked_service("{type: smtp, port: 25, helo_name: '[192.0.2.1]'}"))


def test_an_smtp_check_needs_a_port() -> None:
    problem = only_problem(
        SERVICE.replace("port: 80", "port: 0\n    persistence_timeout: 60")
        + "        checks: [{type: smtp}]\n"
    )
    assert "a smtp check needs a port" in problem
