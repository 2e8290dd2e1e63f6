"""Fetching one web page for read_url, safely: http(s) only, every hop's
host checked against the AddressPolicy before connecting, the address
actually connected to checked again before the body is read (a DNS answer
can change between our lookup and the client's: DNS rebinding), a bounded
number of redirects, a total deadline and a size limit on the body.

Synchronous on purpose: read_url runs in the tool thread pool, where the
text extraction that follows (CPU work) belongs anyway."""

from __future__ import annotations

import logging
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from bot.errors import ToolError
from bot.tools.web.addresses import (
    AddressPolicy,
    ForbiddenAddress,
    IPAddress,
    Resolver,
    literal_address,
    parse_address,
    system_resolver,
)

log = logging.getLogger(__name__)

MAX_URL_CHARS = 2048
# A DNS name as httpx hands it over (internationalized names already in
# their xn-- form); anything else (spaces, percent signs) is not a host.
_HOST_NAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?$")
REDIRECTS = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "Mozilla/5.0 (compatible; Arium read_url)"
_RAW_CHUNK = 64 * 1024


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int  # of the decoded body; more is cut
    timeout: float  # seconds for the whole fetch, redirects included
    max_redirects: int = 5


@dataclass(frozen=True)
class FetchedPage:
    url: str  # after redirects
    media_type: str  # "text/html"; "" when the server did not say
    charset: str | None
    body: bytes
    cut: str | None = None  # why the body is incomplete; None when it is whole


def parse_web_url(raw: str) -> httpx.URL:
    """The URL if read_url may try it; a ToolError saying what is wrong otherwise."""
    text = raw.strip()
    if not text:
        raise ToolError("the URL is empty; pass a full address such as https://example.com/page")
    if len(text) > MAX_URL_CHARS:
        raise ToolError(f"the URL is longer than {MAX_URL_CHARS} characters")
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise ToolError(f"{text[:200]!r} is not a valid URL") from None
    if not url.scheme:
        raise ToolError(f"{text[:200]!r} has no scheme; write the full address starting with https:// or http://")
    if url.scheme not in ("http", "https"):
        raise ToolError(f"only http and https pages can be read, not {url.scheme}: URLs")
    if not url.host:
        raise ToolError(f"{text[:200]!r} has no host name")
    if literal_address(url.host) is None and not _HOST_NAME.match(_ascii_host(url)):
        raise ToolError(f"{text[:200]!r} is not a valid URL (bad host name)")
    if url.userinfo:
        raise ToolError("URLs with a user name or password in them are not read")
    return url


# Media type -> whether its body may be read. Decided from the headers, so a
# PDF or a video is refused before any of it is downloaded.
MediaFilter = Callable[[str], bool]


class PageFetcher:
    def __init__(
        self, policy: AddressPolicy, limits: FetchLimits, *, resolver: Resolver = system_resolver
    ) -> None:
        self._policy = policy
        self._limits = limits
        self._resolve = resolver

    def fetch(self, url: httpx.URL, readable: MediaFilter) -> FetchedPage:
        deadline = time.monotonic() + self._limits.timeout
        # trust_env=False: through a proxy the connected address would be the
        # proxy's, and the rebinding check below would check nothing.
        with httpx.Client(
            follow_redirects=False,
            trust_env=False,
            headers={
                "User-Agent": USER_AGENT,
                "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.5",
                # Only encodings the bounded decoder below knows.
                "Accept-Encoding": "gzip, deflate",
            },
        ) as client:
            for _hop in range(self._limits.max_redirects + 1):
                response = self._open(client, url, deadline)
                try:
                    target = _redirect_target(response)
                    if target is None:
                        return self._read(response, readable, deadline)
                finally:
                    response.close()
                url = target
        raise ToolError(f"the page redirected more than {self._limits.max_redirects} times; giving up")

    def _open(self, client: httpx.Client, url: httpx.URL, deadline: float) -> httpx.Response:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ToolError(f"the page did not load within {self._limits.timeout:g} s")
        host = url.host
        literal = literal_address(host)
        addresses = [literal] if literal else self._resolve(_ascii_host(url), url.port or _default_port(url))
        _checked(self._policy, host, addresses)
        try:
            response = client.send(client.build_request("GET", url, timeout=remaining), stream=True)
        except httpx.TimeoutException:
            raise ToolError(f"{host} did not answer within {self._limits.timeout:g} s") from None
        except httpx.ConnectError:
            raise ToolError(f"could not connect to {host}") from None
        except httpx.HTTPError as exc:
            raise ToolError(f"the connection to {host} failed ({exc.__class__.__name__})") from None
        try:
            self._check_connected(host, response)
        except BaseException:
            response.close()
            raise
        return response

    def _check_connected(self, host: str, response: httpx.Response) -> None:
        """The address the socket really went to must pass the policy too."""
        peer = _connected_address(response)
        if peer is None:
            # Fail closed: an unverifiable connection is not read.
            raise ForbiddenAddress(f"could not verify which address {host} connected to; not reading it")
        _checked(self._policy, host, [peer])

    def _read(self, response: httpx.Response, readable: MediaFilter, deadline: float) -> FetchedPage:
        if not 200 <= response.status_code < 300:
            reason = f" {response.reason_phrase}" if response.reason_phrase else ""
            raise ToolError(f"the page answered HTTP {response.status_code}{reason}")
        media_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if not readable(media_type):
            raise ToolError(
                f"the page is {media_type}, which read_url cannot read (it reads HTML and plain text pages)"
            )
        decoder = _BoundedDecoder(response.headers.get("content-encoding", ""))
        limit = self._limits.max_bytes
        body = bytearray()
        cut: str | None = None
        try:
            for chunk in response.iter_raw(_RAW_CHUNK):
                # One byte past the limit tells "cut" from "exactly the limit".
                body += decoder.feed(chunk, limit + 1 - len(body))
                if len(body) > limit:
                    cut = f"the page is larger than {_size(limit)}; only its beginning was read"
                    break
                if time.monotonic() > deadline:
                    cut = f"the page was still loading after {self._limits.timeout:g} s; only its beginning was read"
                    break
        except httpx.TimeoutException:
            if not body:
                raise ToolError(f"the page did not load within {self._limits.timeout:g} s") from None
            cut = "the page stopped arriving; only its beginning was read"
        except httpx.HTTPError as exc:
            raise ToolError(f"reading the page failed ({exc.__class__.__name__})") from None
        return FetchedPage(str(response.url), media_type, response.charset_encoding, bytes(body[:limit]), cut)


class _BoundedDecoder:
    """Content-Encoding undone a bounded piece at a time: a few KB of gzip
    can expand to gigabytes, so never more than the room left is inflated."""

    def __init__(self, encoding: str) -> None:
        name = encoding.strip().lower()
        if name in ("", "identity"):
            self._inflater = None
        elif name in ("gzip", "x-gzip"):
            self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif name == "deflate":
            self._inflater = zlib.decompressobj()
        else:
            raise ToolError(f"the page is compressed as {encoding!r}, which read_url cannot decode")

    def feed(self, data: bytes, room: int) -> bytes:
        if self._inflater is None:
            return data[:room]
        try:
            return self._inflater.decompress(data, room)
        except zlib.error:
            raise ToolError("the page's compressed body is corrupt") from None


def _checked(policy: AddressPolicy, host: str, addresses: list[IPAddress]) -> None:
    try:
        policy.check(host, addresses)
    except ForbiddenAddress as exc:
        # Worth the operator's eye: a page or a user trying to reach inside.
        log.warning("read_url refused %s: %s", host, exc)
        raise


def _redirect_target(response: httpx.Response) -> httpx.URL | None:
    if response.status_code not in REDIRECTS:
        return None
    location = response.headers.get("location", "").strip()
    if not location:
        raise ToolError(f"the page answered HTTP {response.status_code} (a redirect) without saying where to")
    try:
        target = response.url.join(location)
    except (httpx.InvalidURL, ValueError):
        raise ToolError("the page redirected to an invalid URL") from None
    return parse_web_url(str(target))  # the next hop passes the same checks as the first


def _connected_address(response: httpx.Response) -> IPAddress | None:
    stream = response.extensions.get("network_stream")
    if stream is None:
        return None
    peer = stream.get_extra_info("server_addr")
    if not peer:
        return None
    try:
        return parse_address(str(peer[0]))
    except ValueError:
        return None


def _ascii_host(url: httpx.URL) -> str:
    """The host as DNS sees it: an internationalized name in its xn-- form."""
    return url.raw_host.decode("ascii", errors="replace")


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80


def _size(count: int) -> str:
    return f"{count // 1024} KB" if count >= 1024 else f"{count} bytes"
