"""Which network addresses read_url may talk to.

The URL comes from the model, and the model takes orders from whatever text
it reads, so a page can ask it to fetch ``http://169.254.169.254/`` (a cloud
metadata service) or ``http://localhost:6379/``. Only public unicast
addresses are allowed by default; an operator can open all private space
(WEB_ALLOW_PRIVATE) or chosen networks (WEB_ALLOWED_NETWORKS).

An address is judged by what it *is*, after resolution, not by how the URL
spelled it: ``http://2130706433/`` and ``http://[::ffff:127.0.0.1]/`` are
both loopback."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bot.errors import ToolError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# host, port -> every address the host resolves to. A seam: tests stand in
# a resolver that lies, as a rebinding DNS server would.
Resolver = Callable[[str, int], list[IPAddress]]

# NAT64: IPv6 addresses standing for an IPv4 one (its last 32 bits).
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class ForbiddenAddress(ToolError):
    """The host is (or resolves to) an address read_url may not reach."""


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address the operating system resolves ``host`` to (blocking)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise ToolError(f"the host {host} could not be found (DNS lookup failed)") from None
    return [parse_address(str(info[4][0])) for info in infos]


def parse_address(text: str) -> IPAddress:
    """An address from a socket or URL; an IPv6 zone ("fe80::1%eth0") is dropped."""
    return ipaddress.ip_address(text.split("%", 1)[0])


def literal_address(host: str) -> IPAddress | None:
    """The address when ``host`` is an IP literal, else None (a name)."""
    try:
        return parse_address(host.strip("[]"))
    except ValueError:
        return None


def _tunnelled_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 end of a 6to4 or Teredo address, where packets may leave for."""
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address
    return None


def is_public(address: IPAddress) -> bool:
    """A globally routable unicast address: not private, loopback, link-local,
    multicast, reserved, unspecified or shared (CGNAT), in either family, nor
    an IPv6 address wrapping such an IPv4 one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None or address in _NAT64:
            # Only a wrapper: the IPv4 address inside decides (DNS64
            # networks give every IPv4-only site such an address).
            return is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        inner = _tunnelled_ipv4(address)
        if inner is not None and not is_public(inner):
            return False
    special = (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )
    # is_global is False for the rest of the special-purpose space
    # (100.64.0.0/10, documentation ranges...), which the flags above miss.
    return not special and address.is_global


@dataclass(frozen=True)
class AddressPolicy:
    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(cls, allow_private: bool, networks: Iterable[IPNetwork]) -> AddressPolicy:
        return cls(allow_private, tuple(networks))

    def permits(self, address: IPAddress) -> bool:
        if self.allow_private or is_public(address):
            return True
        return any(_contains(network, address) for network in self.allowed_networks)

    def check(self, host: str, addresses: Iterable[IPAddress]) -> None:
        """Raise ForbiddenAddress unless every address is permitted: a client
        may connect to any of them, so one bad address spoils the host."""
        for address in addresses:
            if not self.permits(address):
                raise ForbiddenAddress(
                    f"{host} leads to a private or special network address ({address}); "
                    "only public web pages can be read"
                )


def _contains(network: IPNetwork, address: IPAddress) -> bool:
    if address.version != network.version and isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped
        return inner is not None and inner in network
    return address.version == network.version and address in network
