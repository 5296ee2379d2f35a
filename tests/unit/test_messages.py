"""The channel messages: each round-trips as one JSON line; anything else is a MessageError."""

from __future__ import annotations

import base64
import pickle

import pytest

from lvsha.config import load_text
from lvsha.messages import (
    ApplyConfig,
    ChildReady,
    ConfigApplied,
    Message,
    MessageError,
    VrrpRoles,
    VrrpStateChanged,
    decode,
    encode,
    for_vrrp,
)

CONFIG = load_text(
    """\
vrrp_instances:
  VI_1: {interface: eth0, virtual_router_id: 51, priority: 150, virtual_ipaddresses: [10.0.0.1]}
virtual_servers:
  - address: 10.0.0.1
    protocol: TCP
    port: 80
    real_servers: [{address: 192.168.1.2}]
"""
)


@pytest.mark.parametrize(
    "message",
    [
        ChildReady(),
        VrrpStateChanged("VI_1", "BACKUP", "MASTER", "master down timer expired", 150),
        VrrpRoles((("VI_1", "MASTER"),)),
        ApplyConfig.of(2, "ab" * 32, CONFIG),
        ConfigApplied(2, True),
        ConfigApplied(3, False, ("eth0: cannot add 10.0.0.2: refused",), "10.0.0.2 stays on eth0"),
    ],
)
def test_each_message_round_trips_as_one_line(message: Message) -> None:
    line = encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode(line) == message


def test_apply_config_carries_the_validated_model() -> None:
    message = decode(encode(ApplyConfig.of(2, "cd" * 32, CONFIG)))
    assert isinstance(message, ApplyConfig)
    assert message.config() == CONFIG
    assert (message.generation, message.digest) == (2, "cd" * 32)


def test_the_vrrp_child_gets_no_virtual_servers() -> None:
    reduced = for_vrrp(CONFIG)
    assert reduced.virtual_servers == []
    assert reduced.vrrp_instances == CONFIG.vrrp_instances
    assert len(CONFIG.virtual_servers) == 1  # the original is untouched


@pytest.mark.parametrize(
    ("snapshot", "error"),
    [
        ("not base64!", "does not unpickle"),
        (base64.b64encode(b"garbage").decode(), "does not unpickle"),
        (base64.b64encode(pickle.dumps({"a": 1})).decode(), "the snapshot is a dict"),
    ],
)
def test_a_snapshot_that_is_no_configuration_is_an_error(snapshot: str, error: str) -> None:
    with pytest.raises(MessageError, match=error):
        ApplyConfig(2, "", snapshot).config()


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"{", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"message": "nope"}', "unknown message kind 'nope'"),
        (b'{"message": "config_applied", "generation": 1}', "fields"),
        (
            b'{"message": "config_applied", "generation": 1, "ok": 1, "errors": [], "left": ""}',
            "config_applied.ok",
        ),
        (
            b'{"message": "config_applied", "generation": 1, "ok": true, "errors": [1], '
            b'"left": ""}',
            "config_applied.errors: expected a list of strings",
        ),
    ],
)
def test_malformed_lines_are_refused(line: bytes, error: str) -> None:
    with pytest.raises(MessageError, match=error.replace("(", r"\(")):
        decode(line)
