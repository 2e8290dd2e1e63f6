"""web_search providers: a SearXNG instance or the Brave Search API.

Their addresses are the operator's choice, so unlike read_url's they may be
private (a SearXNG on localhost is the usual setup) and no address policy
applies. Every failure of the provider becomes a ToolError the model can
relay; the key never appears in one."""

from __future__ import annotations

import asyncio
import html
import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from bot.errors import ToolError

BRAVE_URL = "https://api.search.brave.com"
MAX_ANSWER_BYTES = 2 * 1024 * 1024  # a page of results is a few KB
_TAG = re.compile(r"<[^>]+>")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class SearchHit:
    title: str
    url: str
    snippet: str


class SearchProvider(Protocol):
    name: str

    async def search(self, query: str, count: int) -> list[SearchHit]: ...


class _JsonProvider:
    """GET a JSON answer within a total deadline, with clear errors."""

    name = "search"

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout

    async def _get_json(self, url: str, params: dict[str, Any], headers: dict[str, str]) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._request(url, params, headers)
        except TimeoutError:
            raise ToolError(f"the {self.name} search did not answer within {self._timeout:g} s") from None
        except httpx.TimeoutException:
            raise ToolError(f"the {self.name} search did not answer within {self._timeout:g} s") from None
        except httpx.ConnectError:
            raise ToolError(f"the {self.name} search could not be reached; try again later") from None
        except httpx.HTTPError as exc:
            raise ToolError(f"the {self.name} search failed ({exc.__class__.__name__})") from None

    async def _request(self, url: str, params: dict[str, Any], headers: dict[str, str]) -> Any:
        # A client per call: searches are rare next to chat turns, and this
        # leaves nothing to close when the bot stops.
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            async with client.stream("GET", url, params=params, headers=headers) as response:
                self._check_status(response.status_code)
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise ToolError(f"the {self.name} search answered with more data than a page of results")
        try:
            return json.loads(body)
        except ValueError:
            raise ToolError(f"the {self.name} search answered something that is not JSON") from None

    def _check_status(self, status: int) -> None:
        if status == 429:
            raise ToolError(f"the {self.name} search is rate limited right now; try again later")
        if status in (401, 403):
            raise ToolError(
                f"the {self.name} search refused the request (HTTP {status}); the operator must check its settings"
            )
        if status >= 400:
            raise ToolError(f"the {self.name} search failed (HTTP {status})")


class SearxngSearch(_JsonProvider):
    name = "SearXNG"

    def __init__(self, base_url: str, *, timeout: float) -> None:
        super().__init__(timeout)
        self._url = base_url.rstrip("/") + "/search"

    async def search(self, query: str, count: int) -> list[SearchHit]:
        data = await self._get_json(self._url, {"q": query, "format": "json"}, {"Accept": "application/json"})
        return _hits(_list_at(data, "results", self.name), count, snippet_key="content")

    def _check_status(self, status: int) -> None:
        if status == 403:
            # SearXNG's answer when "json" is missing from search.formats.
            raise ToolError("the SearXNG instance refused JSON (HTTP 403); the operator must enable the json format")
        super()._check_status(status)


class BraveSearch(_JsonProvider):
    name = "Brave"

    def __init__(
        self,
        key: str,
        *,
        timeout: float,
        base_url: str = BRAVE_URL,
    ) -> None:
        super().__init__(timeout)
        self._key = key
        self._url = base_url.rstrip("/") + "/res/v1/web/search"

    async def search(self, query: str, count: int) -> list[SearchHit]:
        headers = {"Accept": "application/json", "X-Subscription-Token": self._key}
        data = await self._get_json(self._url, {"q": query, "count": count}, headers)
        web = data.get("web") if isinstance(data, dict) else None
        if web is None and isinstance(data, dict) and "query" in data:
            return []  # Brave leaves "web" out when nothing matched
        return _hits(_list_at(web, "results", self.name), count, snippet_key="description")


def _list_at(data: Any, key: str, provider: str) -> list[Any]:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, list):
        raise ToolError(f"the {provider} search answered in an unexpected shape (no {key} list)")
    return value


def _hits(items: list[Any], count: int, *, snippet_key: str) -> list[SearchHit]:
    hits: list[SearchHit] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        url = item.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            continue
        hits.append(SearchHit(_plain(item.get("title"), 200) or url, url, _plain(item.get(snippet_key), 400)))
        if len(hits) == count:
            break
    return hits


def _plain(value: Any, limit: int) -> str:
    """Snippets come with <strong> highlights and entities; the model wants text."""
    if not isinstance(value, str):
        return ""
    text = _WHITESPACE.sub(" ", html.unescape(_TAG.sub("", value))).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def format_hits(query: str, hits: list[SearchHit]) -> str:
    if not hits:
        return f"no results for {query!r}"
    lines = []
    for number, hit in enumerate(hits, 1):
        lines.append(f"{number}. {hit.title}\n   {hit.url}")
        if hit.snippet:
            lines.append(f"   {hit.snippet}")
    return "\n".join(lines)
