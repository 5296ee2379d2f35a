"""accept: false through lvsha's own nftables table: the rule text and the nft edge."""

from __future__ import annotations

import os
import stat
from ipaddress import ip_address
from pathlib import Path

import pytest

from lvsha.net.nft import MISSING_NFT, FirewallError, NftNoAccept, removal, ruleset

REMOVAL = "table inet lvsha_vrrp\ndelete table inet lvsha_vrrp\n"


def test_the_ruleset_replaces_the_whole_table_in_one_transaction() -> None:
    addresses = [ip_address("192.0.2.100"), ip_address("2001:db8::1"), ip_address("192.0.2.5")]
    assert ruleset(addresses) == REMOVAL + (
        "table inet lvsha_vrrp {\n"
        "  set no_accept4 { type ipv4_addr; elements = { 192.0.2.5, 192.0.2.100 }; }\n"
        "  set no_accept6 { type ipv6_addr; elements = { 2001:db8::1 }; }\n"
        "  chain input {\n"
        "    type filter hook input priority -1; policy accept;\n"
        "    meta l4proto 112 accept\n"
        "    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept\n"
        "    ip daddr @no_accept4 drop\n"
        "    ip6 daddr @no_accept6 drop\n"
        "  }\n"
        "}\n"
    )


def test_an_empty_family_has_an_empty_set() -> None:
    text = ruleset([ip_address("192.0.2.1")])
    assert "set no_accept6 { type ipv6_addr; }" in text
    assert removal() == REMOVAL


def fake_nft(tmp_path: Path, body: str) -> Path:
    """An `nft` that records its arguments and stdin in tmp_path, then runs `body`."""
    path = tmp_path / "nft"
    path.write_text(
        f'#!/bin/sh\necho "$@" > {tmp_path}/args\ncat > {tmp_path}/stdin\n' + body + "\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


async def test_set_addresses_feeds_the_ruleset_to_nft_on_stdin(tmp_path: Path) -> None:
    nft = NftNoAccept(str(fake_nft(tmp_path, "exit 0")))
    wanted = frozenset({ip_address("192.0.2.10")})
    await nft.set_addresses(wanted)
    assert (tmp_path / "args").read_text() == "-f -\n"
    assert (tmp_path / "stdin").read_text() == ruleset(wanted)
    assert nft.addresses == wanted
    await nft.set_addresses(frozenset())  # nothing to drop: no table at all
    assert (tmp_path / "stdin").read_text() == REMOVAL
    await nft.set_addresses(wanted)
    await nft.remove()
    assert (tmp_path / "stdin").read_text() == REMOVAL
    assert nft.addresses == frozenset()


async def test_what_nft_says_when_it_refuses_is_in_the_error(tmp_path: Path) -> None:
    nft = NftNoAccept(str(fake_nft(tmp_path, "echo 'Error: Could not process rule' >&2; exit 1")))
    with pytest.raises(FirewallError) as caught:
        await nft.set_addresses(frozenset({ip_address("192.0.2.10")}))
    assert str(caught.value) == (
        "nft refused the rules of table inet lvsha_vrrp: Error: Could not process rule"
    )
    assert nft.addresses == frozenset()


async def test_without_nft_accept_false_is_refused_clearly(tmp_path: Path) -> None:
    saved = os.environ.get("PATH")
    os.environ["PATH"] = str(tmp_path)  # no nft here
    try:
        nft = NftNoAccept()
    finally:
        os.environ["PATH"] = saved or ""
    assert not nft.available
    await nft.set_addresses(frozenset())  # nothing asked: nothing to do
    await nft.remove()
    with pytest.raises(FirewallError) as caught:
        await nft.set_addresses(frozenset({ip_address("192.0.2.10")}))
    assert str(caught.value) == MISSING_NFT
    assert "install it (apt install nftables) or set accept: true" in MISSING_NFT


async def test_an_nft_that_cannot_run_is_an_error_not_a_crash(tmp_path: Path) -> None:
    nft = NftNoAccept(str(tmp_path / "missing-nft"))
    with pytest.raises(FirewallError, match=r"cannot run .*missing-nft"):
        await nft.set_addresses(frozenset({ip_address("192.0.2.10")}))


async def test_with_a_marker_nft_runs_only_when_a_table_of_ours_may_exist(tmp_path: Path) -> None:
    marker = tmp_path / "nft-lvsha_vrrp"
    nft = NftNoAccept(str(fake_nft(tmp_path, "exit 0")), marker=marker)
    await nft.set_addresses(frozenset())  # no record of a table: nft is not run
    await nft.remove()
    assert not (tmp_path / "stdin").exists()
    wanted = frozenset({ip_address("192.0.2.10")})
    await nft.set_addresses(wanted)
    assert marker.exists()
    assert (tmp_path / "stdin").read_text() == ruleset(wanted)
    # a crash: the next process finds the record and clears the table
    restarted = NftNoAccept(str(fake_nft(tmp_path, "exit 0")), marker=marker)
    (tmp_path / "stdin").unlink()
    await restarted.set_addresses(frozenset())
    assert (tmp_path / "stdin").read_text() == REMOVAL
    assert not marker.exists()


async def test_the_marker_is_written_before_the_table(tmp_path: Path) -> None:
    marker = tmp_path / "nft-lvsha_vrrp"
    nft = NftNoAccept(str(fake_nft(tmp_path, f"test -e {marker} || exit 3")), marker=marker)
    await nft.set_addresses(frozenset({ip_address("192.0.2.10")}))  # nft saw the marker
