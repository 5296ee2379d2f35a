"""Link state bookkeeping, fed by hand with what rtnetlink would say."""

from __future__ import annotations

from lvsha.net.links import IFF_RUNNING, IFF_UP, LinkChanged, LinkTable, is_up

UP = IFF_UP | IFF_RUNNING | 0x10000  # IFF_LOWER_UP too, as the kernel reports it
NO_CARRIER = IFF_UP
ADMIN_DOWN = 0


def test_up_needs_both_admin_up_and_running() -> None:
    assert is_up(IFF_UP | IFF_RUNNING)
    assert not is_up(IFF_UP)
    assert not is_up(IFF_RUNNING)
    assert not is_up(0)


def test_watched_interfaces_start_down_until_seen() -> None:
    table = LinkTable(["eth0", "eth1"])
    assert table.states == {"eth0": False, "eth1": False}
    changes = table.resync([(1, "lo", UP), (2, "eth0", UP), (3, "eth1", NO_CARRIER)])
    assert changes == [LinkChanged("eth0", True)]
    assert table.states == {"eth0": True, "eth1": False}


def test_only_changes_of_watched_interfaces_are_reported() -> None:
    table = LinkTable(["eth0"])
    table.resync([(2, "eth0", UP), (3, "eth1", UP)])
    assert table.link_seen(2, "eth0", UP) == []
    assert table.link_seen(3, "eth1", NO_CARRIER) == []
    assert table.link_seen(2, "eth0", NO_CARRIER) == [LinkChanged("eth0", False)]
    assert table.link_seen(2, "eth0", ADMIN_DOWN) == []
    assert table.link_seen(2, "eth0", UP) == [LinkChanged("eth0", True)]


def test_a_deleted_interface_is_down_and_a_new_one_with_its_name_counts() -> None:
    table = LinkTable(["vlan7"])
    table.resync([(5, "vlan7", UP)])
    assert table.link_gone(5) == [LinkChanged("vlan7", False)]
    assert table.link_gone(5) == []
    assert table.link_seen(9, "vlan7", UP) == [LinkChanged("vlan7", True)]


def test_renames_move_the_state_with_the_name() -> None:
    table = LinkTable(["eth0", "wan"])
    table.resync([(2, "eth0", UP)])
    assert table.link_seen(2, "wan", UP) == [LinkChanged("eth0", False), LinkChanged("wan", True)]


def test_resync_reports_what_changed_while_notifications_were_lost() -> None:
    table = LinkTable(["eth0", "eth1"])
    table.resync([(2, "eth0", UP), (3, "eth1", UP)])
    assert table.resync([(2, "eth0", NO_CARRIER), (3, "eth1", UP)]) == [LinkChanged("eth0", False)]
    assert table.resync([(3, "eth1", UP)]) == []
