"""image_type=URL: off unless hosts are allow-listed (--url-hosts); then only http(s) GETs to those
hosts, no redirects, bounded in time and size (docs/api.md): an open fetcher is an SSRF hole."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from facecore.errors import BadImage, BadImageType, DownloadFailed


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect could lead anywhere, allow-list or not: refuse it


_opener = urllib.request.build_opener(_NoRedirect)


def fetch_image(url: str, hosts: frozenset[str], max_bytes: int, timeout: float) -> bytes:
    if not hosts:
        raise BadImageType("image_type URL is disabled on this server (see --url-hosts)")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadImage("image must be an http(s) URL when image_type is URL")
    if parts.hostname.lower() not in hosts:
        raise DownloadFailed(f"host {parts.hostname!r} is not in the URL allow-list")
    try:
        with _opener.open(urllib.request.Request(url, method="GET"), timeout=timeout) as r:
            if r.status != 200:
                raise DownloadFailed(f"the image URL answered HTTP {r.status}")
            data: bytes = r.read(max_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DownloadFailed(f"the image URL could not be fetched: {e}") from None
    if len(data) > max_bytes:
        raise DownloadFailed(f"the image at the URL is over {max_bytes} bytes")
    return data
