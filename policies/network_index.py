"""Network signatures indexed for the engine: CIDRs by prefix length, domains by suffix.

A connection costs one dict probe per distinct prefix length (a dozen)
whatever the number of networks, and one per label of its host name.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from policies.observations import ConnectionObservation
from policies.vocabulary import Confidence

# Ends the `matched` text of a domain match made on a DNS answer, not on the connection.
VIA_DNS = " (via DNS)"


@dataclass(frozen=True)
class Match:
    app: str
    signature: str
    confidence: Confidence


class NetworkIndex:
    def __init__(self) -> None:
        # IP version -> prefix length -> network address (as an int) -> (app, ports)
        self._networks: dict[int, dict[int, dict[int, tuple[str, frozenset[int]]]]] = {
            4: defaultdict(dict), 6: defaultdict(dict)}
        self.domains: dict[str, tuple[str, frozenset[int]]] = {}

    def add(self, app_id: str, network: dict[str, Any]) -> None:
        ports = frozenset(network.get("ports", []))
        for cidr in network.get("cidrs", []):
            net = ipaddress.ip_network(cidr)
            self._networks[net.version][net.prefixlen][int(net.network_address)] = (app_id, ports)
        for domain in network.get("domains", []):
            self.domains[domain] = (app_id, ports)

    def match(self, obs: ConnectionObservation) -> Iterator[Match]:
        if obs.remote_host and not obs.host_from_dns:
            yield from self._match_host(obs.remote_host, obs.remote_port, "high", "")
        yield from self._match_address(obs)
        if obs.remote_host and obs.host_from_dns:
            # After the CIDRs, so an exact network match (high) is the one kept:
            # a DNS answer can be an address shared with unrelated sites (CDNs).
            yield from self._match_host(obs.remote_host, obs.remote_port, "medium", VIA_DNS)

    def _match_host(self, host: str, port: int, confidence: Confidence, how: str
                    ) -> Iterator[Match]:
        parts = host.lower().rstrip(".").split(".")
        for start in range(len(parts)):
            hit = self.domains.get(".".join(parts[start:]))
            if hit and (not hit[1] or port in hit[1]):
                yield Match(hit[0], f"network.domains: {'.'.join(parts[start:])}{how}",
                            confidence)
                return

    def _match_address(self, obs: ConnectionObservation) -> Iterator[Match]:
        try:
            address = ipaddress.ip_address(obs.remote_ip)
        except ValueError:
            return
        if address.version == 6 and address.ipv4_mapped:  # ::ffff:1.2.3.4 sockets
            address = address.ipv4_mapped
        value = int(address)
        bits = address.max_prefixlen
        for prefix, table in self._networks[address.version].items():
            network = value >> (bits - prefix) << (bits - prefix) if prefix else 0
            hit = table.get(network)
            if hit and (not hit[1] or obs.remote_port in hit[1]):
                net = ipaddress.ip_network((network, prefix))
                yield Match(hit[0], f"network.cidrs: {net}", "high")
