"""Which messenger domain a remote address stands for, from the agent's DNS answers. Pure.

The agent looks up the catalog domains of the apps its policy reports on
(agent.sensors.dns) and keeps, per domain, each address it was answered with
and when. `build_table` turns those answers into an address -> domain table;
`host_for` is the look-up the network sensor makes per connection. An address
in the table makes the connection's `remote_host` that domain, marked as
inferred (`host_from_dns`), and the engine's ordinary domain matching applies.

Shared addresses are the false-positive risk: a CDN address answered for a
messenger's domain may serve a thousand other sites. What keeps the table honest:

- only globally routable answers count: a DNS sinkhole answers 0.0.0.0,
  127.0.0.1 or an internal block page, and taking those would flag every
  local connection as the blocked app;
- an address answered for the domains of two different apps is shared
  infrastructure by definition, and dropped;
- answers age out `retain` seconds after the last one that included them;
- the engine ranks such a match "medium", below an exact CIDR match.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable, Mapping

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# domain -> {address: monotonic time of the last answer that included it}
Answers = Mapping[str, Mapping[str, float]]


def routable(address: IPAddress) -> bool:
    """Whether a DNS answer can stand for an app's server: globally routable ones only."""
    return address.is_global


def build_table(
    answers: Answers,
    apps: Mapping[str, str],
    *,
    now: float,
    retain: float,
    admit: Callable[[IPAddress], bool] = routable,
) -> dict[str, str]:
    """Address (canonical text) -> domain, from `answers` for the domains in `apps` (-> app).

    Answers for domains no longer in `apps` (the policy changed), older than
    `retain`, not admitted, or not addresses at all are left out; so is an
    address answered for two apps. Of one app's domains sharing an address,
    the first in sort order names it, so the table does not flap.
    """
    domains_at: dict[str, set[str]] = defaultdict(set)
    for domain, seen in answers.items():
        if domain not in apps:
            continue
        for text, when in seen.items():
            address = _address(text)
            if address is not None and now - when <= retain and admit(address):
                domains_at[str(address)].add(domain)
    return {
        address: min(domains) for address, domains in domains_at.items()
        if len({apps[domain] for domain in domains}) == 1
    }


def host_for(table: Mapping[str, str], remote_ip: str) -> str | None:
    """The domain `remote_ip` was an answer for, if any; one dict probe on the hot path."""
    host = table.get(remote_ip)
    if host is None and remote_ip.startswith("::ffff:") and "." in remote_ip:
        host = table.get(remote_ip[7:])  # an IPv4 peer of a dual-stack socket
    return host


def _address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped:
        return address.ipv4_mapped
    return address
