"""The archive's download: an http(s) URL, a file:// URL or a local path into place, checked against its md5, resumed
after an interruption. Knows nothing of DVC; InputError messages name the params.yaml key a user would change.
"""

import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from tqdm import tqdm

from imbsam import datasets
from imbsam.data.checksum import md5sum
from imbsam.errors import InputError, one_line

_CHUNK = 1 << 20


class _TransientError(Exception):
    """A failed attempt worth retrying (connection reset, short read, timeout, 5xx)."""


def fetch(source, dest, md5, timeout=60, retries=5, backoff=1.0, progress=True, dataset="cifar100"):
    """Put the file at source into dest, checked against md5; return dest as a Path.

    source: an http(s) URL, a file:// URL or a local path. dest is only ever replaced by a file
    whose md5 matches, and a dest that already matches is kept without downloading. An http(s)
    download streams into dest + ".part"; after a failure the .part stays and the next attempt (or
    the next call) resumes it with a Range request. retries: extra attempts after the first, waiting
    backoff, 2 * backoff, 4 * backoff, ... seconds before them. timeout: seconds per connect or read.
    dataset (imbsam.datasets) names the genuine archive in messages.
    """
    genuine = datasets.get(dataset)
    dest = Path(dest)
    expected = str(md5).lower()
    if not re.fullmatch(r"[0-9a-f]{32}", expected):
        raise InputError(f"data.md5={md5!r} is not an md5 (32 hex digits); quote it in params.yaml")
    if dest.is_file() and md5sum(dest) == expected:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    parsed = urlparse(str(source))
    if parsed.scheme in ("http", "https"):
        _http_download(str(source), part, timeout, retries, backoff, progress)
    else:
        local = Path(urllib.request.url2pathname(parsed.path)) if parsed.scheme == "file" else Path(source)
        if not local.is_file():
            raise InputError(
                f"data.url={source!r}: {local} not found; point data.url at a copy of {genuine.ARCHIVE} "
                f"or at {genuine.URL}"
            )
        _copy_with_progress(local, part, progress)
    actual = md5sum(part)
    if actual != expected:
        part.unlink()
        raise InputError(
            f"md5 mismatch for {source}: expected {expected}, got {actual}; point data.url at a good copy "
            f"(the genuine archive's md5 is {genuine.MD5}), or set data.md5={actual} if you knowingly use "
            "another archive"
        )
    os.replace(part, dest)
    return dest


def _progress_bar(name, total, initial, enabled):
    return tqdm(
        total=total,
        initial=initial,
        desc=name,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not enabled,
        file=sys.stderr,
    )


def _copy_with_progress(source, part, progress):
    size = source.stat().st_size
    with open(source, "rb") as src, open(part, "wb") as out, _progress_bar(source.name, size, 0, progress) as bar:
        for block in iter(lambda: src.read(_CHUNK), b""):
            out.write(block)
            bar.update(len(block))


def _offline_hint(part):
    archive = part.name.removesuffix(".part")
    return f"offline: download {archive} elsewhere and set data.url to its local path or file:// URL"


def _http_download(url, part, timeout, retries, backoff, progress):
    last_error = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            _http_attempt(url, part, timeout, progress)
            return
        except _TransientError as e:
            last_error = e
    size = part.stat().st_size if part.exists() else 0
    kept = f"{part} keeps {size} bytes and the next run resumes it; " if size else ""
    raise InputError(f"could not download {url} after {retries + 1} attempts ({last_error}); "
                     f"{kept}{_offline_hint(part)}")


def _http_attempt(url, part, timeout, progress):
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    # A fresh opener per attempt: its default ProxyHandler reads http_proxy / https_proxy / no_proxy
    # from the environment now, whereas urlopen's shared opener froze them at its first use.
    opener = urllib.request.build_opener()
    try:
        with opener.open(request, timeout=timeout) as response:
            if offset and response.status == 206:
                start, total = _content_range(response.headers.get("Content-Range"))
                if start != offset:
                    part.unlink()
                    raise _TransientError(f"server resumed at byte {start} instead of {offset}; restarting")
                mode = "ab"
            else:
                # 200 to a Range request: the server ignores ranges and sends the whole file.
                offset, mode = 0, "wb"
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            _stream(response, part, mode, offset, total, progress)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # Nothing left to send: the .part is complete (or stale, which the md5 check catches).
            return
        if e.code in (408, 425, 429) or e.code >= 500:
            raise _TransientError(f"HTTP {e.code} {e.reason}") from e
        raise InputError(f"data.url={url!r}: HTTP {e.code} {e.reason}; check the URL. {_offline_hint(part)}") from e
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        raise _TransientError(one_line(e)) from e


def _content_range(header):
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (header or "").strip())
    if not match:
        raise _TransientError(f"206 with an unreadable Content-Range {header!r}")
    total = match.group(2)
    return int(match.group(1)), int(total) if total != "*" else None


def _stream(response, part, mode, offset, total, progress):
    written = offset
    name = Path(urlparse(response.url).path).name or part.name
    with open(part, mode) as out, _progress_bar(name, total, offset, progress) as bar:
        for block in iter(lambda: response.read(_CHUNK), b""):
            out.write(block)
            written += len(block)
            bar.update(len(block))
    # http.client returns b"" instead of raising when the server closes early, so count.
    if total is not None and written < total:
        raise _TransientError(f"connection closed after {written} of {total} bytes")
