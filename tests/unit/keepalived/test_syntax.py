"""keepalived.conf's syntax (lvsha.keepalived.syntax): blocks, comments, quotes and escapes,
includes, conditional lines and definitions, each with the file and line it came from, and
the errors that name them."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvsha.keepalived.syntax import (
    KeepalivedSyntaxError,
    Statement,
    Where,
    expand_braces,
    parse_file,
    strip_comment,
    words,
)

HERE = Where("t.conf", 1)


def shape(statements: list[Statement]) -> list[object]:
    """The tree as nested lists: [keyword, *args] or [keyword, *args, [children]]."""
    out: list[object] = []
    for s in statements:
        item: list[object] = [s.keyword, *s.args]
        if s.block is not None:
            item.append(shape(s.block))
        out.append(item)
    return out


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_blocks_nest_and_keep_their_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "keepalived.conf",
        """\
! Configuration File for keepalived
global_defs {
   notification_email {
     acassen@firewall.loc   # the admin
   }
   router_id LVS_DEVEL
}
vrrp_instance VI_1 {
    state MASTER
    virtual_ipaddress { 192.168.200.16 192.168.200.17 }
}
vrrp_instance VI_2
{
    state BACKUP
}
""",
    )
    parsed = parse_file(path, "lb1")
    assert shape(parsed.statements) == [
        [
            "global_defs",
            [["notification_email", [["acassen@firewall.loc"]]], ["router_id", "LVS_DEVEL"]],
        ],
        [
            "vrrp_instance",
            "VI_1",
            [["state", "MASTER"], ["virtual_ipaddress", [["192.168.200.16", "192.168.200.17"]]]],
        ],
        ["vrrp_instance", "VI_2", [["state", "BACKUP"]]],
    ]
    instance = parsed.statements[1]
    assert str(instance.where) == f"{path}:8"
    assert str(instance.find("state")[0].where) == f"{path}:9"
    assert parsed.files == [str(path)]


def test_comments_start_anywhere_outside_quotes() -> None:
    assert strip_comment("state MASTER # the first") == "state MASTER "
    assert strip_comment("state MASTER ! the first") == "state MASTER "
    assert strip_comment('script "/bin/check #1"  # note') == 'script "/bin/check #1"  '
    assert strip_comment("auth_pass 'se!cret'") == "auth_pass 'se!cret'"


def test_quotes_join_and_escapes_apply() -> None:
    # As keepalived.conf(5) describes: quotes removed, inner white space kept.
    assert words("""'abcd" efg h jkl "mnop'""", HERE) == ['abcd" efg h jkl "mnop']
    assert words('abcd "efg h jkl" mnop', HERE) == ["abcd", "efg h jkl", "mnop"]
    assert words('x "a\\tb\\x41\\101\\\\"', HERE) == ["x", "a\tbAA\\"]
    assert words("a{b}", HERE) == ["a", "{", "b", "}"]
    assert words('"{"', HERE) == ["{"]


def test_an_unclosed_quote_is_an_error_naming_the_line() -> None:
    with pytest.raises(KeepalivedSyntaxError, match=r"t.conf:1: a \" quote is not closed"):
        words('notify "/bin/x', HERE)


def test_includes_are_relative_to_the_including_file_sorted_and_braced(tmp_path: Path) -> None:
    main = write(tmp_path, "etc/keepalived.conf", "include conf.d/*.conf\ninclude {a,b}.inc\n")
    write(tmp_path, "etc/conf.d/20-b.conf", "vrrp_instance B {\n}\n")
    write(tmp_path, "etc/conf.d/10-a.conf", "include ../nested/x.conf\nvrrp_instance A {\n}\n")
    write(tmp_path, "etc/nested/x.conf", "global_defs {\n}\n")
    write(tmp_path, "etc/b.inc", "vrrp_script chk_b {\n}\n")
    parsed = parse_file(main, "lb1")
    assert [(s.keyword, *s.args) for s in parsed.statements] == [
        ("global_defs",),
        ("vrrp_instance", "A"),
        ("vrrp_instance", "B"),
        ("vrrp_script", "chk_b"),
    ]
    assert parsed.statements[0].where == Where(str(tmp_path / "etc/conf.d/../nested/x.conf"), 1)
    assert parsed.warnings == []  # a.inc matches nothing: a brace part need not exist


def test_an_include_that_matches_nothing_is_a_warning_and_a_loop_an_error(
    tmp_path: Path,
) -> None:
    main = write(tmp_path, "k.conf", "include missing/*.conf\nglobal_defs {\n}\n")
    parsed = parse_file(main, "lb1")
    assert parsed.warnings == [f"{main}:1: include missing/*.conf: no file matches (ignored)"]
    loop = write(tmp_path, "loop.conf", "include loop2.conf\n")
    write(tmp_path, "loop2.conf", "include loop.conf\n")
    with pytest.raises(KeepalivedSyntaxError, match="include loop"):
        parse_file(loop, "lb1")


def test_conditional_lines_follow_the_config_id(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "k.conf",
        """\
vrrp_instance VI_1 {
@lb1 priority 150
@lb2	priority 100
@^lb1 state BACKUP
}
""",
    )
    assert shape(parse_file(path, "lb1").statements) == [
        ["vrrp_instance", "VI_1", [["priority", "150"]]]
    ]
    assert shape(parse_file(path, "lb2").statements) == [
        ["vrrp_instance", "VI_1", [["priority", "100"], ["state", "BACKUP"]]]
    ]


def test_definitions_apply_and_an_undefined_one_stays_with_a_warning(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "k.conf",
        """\
$IF=eth0
$VIPS=10.0.0.1/24 \\
   10.0.0.2/24
@lb2 $PRIO=100
@lb1 $PRIO=150
vrrp_instance VI_1 {
    interface $IF
    priority ${PRIO}
    virtual_ipaddress {
        $VIPS
    }
}
""",
    )
    assert shape(parse_file(path, "lb1").statements) == [
        [
            "vrrp_instance",
            "VI_1",
            [
                ["interface", "eth0"],
                ["priority", "150"],
                ["virtual_ipaddress", [["10.0.0.1/24"], ["10.0.0.2/24"]]],
            ],
        ]
    ]
    bad = write(tmp_path, "bad.conf", "vrrp_instance X {\n  auth_pass pa$word\n}\n")
    parsed = parse_file(bad, "lb1")
    assert shape(parsed.statements) == [["vrrp_instance", "X", [["auth_pass", "pa$word"]]]]
    assert parsed.warnings == [
        f"{bad}:2: $word is not defined above: kept as written (a password with a $ in it, "
        "or a definition missing)"
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("vrrp_instance VI_1 {\n  state MASTER\n", ":1: vrrp_instance: its block is not closed"),
        ("}\n", ":1: '}' closes no block"),
        ("{\n}\n", ":1: '{' with no keyword before it"),
    ],
)
def test_unbalanced_braces_are_errors_naming_the_line(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = write(tmp_path, "k.conf", text)
    with pytest.raises(KeepalivedSyntaxError) as raised:
        parse_file(path, "lb1")
    assert str(raised.value).startswith(f"{path}{problem}"), str(raised.value)


def test_an_unreadable_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(KeepalivedSyntaxError, match=r"missing\.conf: cannot read: No such file"):
        parse_file(tmp_path / "missing.conf", "lb1")


def test_brace_expansion() -> None:
    assert expand_braces("a{b,c{d,e}}f") == ["abf", "acdf", "acef"]
    assert expand_braces("{foo/{,cat,dog},bar}") == ["foo/", "foo/cat", "foo/dog", "bar"]
    assert expand_braces("plain{x}") == ["plain{x}"]


SAMPLES = sorted(Path("/usr/share/doc/keepalived/samples").glob("keepalived.conf.*"))


@pytest.mark.skipif(not SAMPLES, reason="keepalived's samples are not installed (apt: keepalived)")
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda path: path.name)
@pytest.mark.parametrize("config_id", ["high", "low"])
def test_keepalived_own_samples_read_without_error(sample: Path, config_id: str) -> None:
    parsed = parse_file(sample, config_id)
    assert parsed.statements
    assert all(s.where.file == str(sample) for s in parsed.statements)
