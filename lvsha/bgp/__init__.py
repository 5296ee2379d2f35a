"""Announcing virtual services over BGP through the local FRR (`bgp:` in the configuration).

- `lvsha.bgp.frr`: pure: which routes to announce, the vtysh commands that move FRR from what
  its running configuration holds to that, and the readers of FRR's JSON answers;
- `lvsha.bgp.announcer`: the parent's asyncio adapter: runs vtysh, follows the checker's
  quorum reports, drains on a handover or a stop, remembers what it wrote.
"""
