"""Models from a URL: ``https://host/path/model.keras#sha256=<64 hex digits>``, downloaded once.

The file goes to the cache folder (``$FUSIONNET_CACHE``, default
``~/.cache/fusionnet-keras``) as ``downloads/<sha256>/<file name>``, written
atomically (:func:`fusionnet_keras.utils.atomic.atomic_path`) and verified
against the URL's sha256 before it is renamed into place. A cached file is
verified again on every use; one that does not match (cut short, damaged) is
fetched again. ``http://`` is accepted for the local machine only
(127.0.0.1, localhost: the tests' server).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from fusionnet_keras.errors import FusionNetError

CACHE_ENV = "FUSIONNET_CACHE"
_FRAGMENT = re.compile(r"^sha256=([0-9a-fA-F]{64})$")
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


def cache_dir() -> Path:
    """``$FUSIONNET_CACHE``, else ``~/.cache/fusionnet-keras``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "fusionnet-keras")


def is_url(value) -> bool:
    return isinstance(value, str) and value.lower().startswith(("https://", "http://"))


def parse_url(value: str) -> tuple[str, str, str]:
    """``(url without fragment, sha256, file name)`` of ``value``; a one-line error if it cannot be used."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(value)
    if parts.scheme.lower() not in ("https", "http") or not parts.hostname:
        raise FusionNetError(f"not a download URL: {value}")
    if parts.scheme.lower() == "http" and parts.hostname not in _LOCAL_HOSTS:
        raise FusionNetError(f"use https:// to download models (http:// only from this machine): {value}")
    match = _FRAGMENT.match(parts.fragment)
    if match is None:
        raise FusionNetError(f"the URL {value} needs '#sha256=<64 hex digits>' so the download can be verified")
    name = unquote(parts.path.rsplit("/", 1)[-1])
    if not name or name.startswith(".") or "/" in name or "\\" in name:
        raise FusionNetError(f"the URL {value} does not end in a file name (e.g. .../model.keras)")
    return parts._replace(fragment="").geturl(), match[1].lower(), name


def _digest(path: Path) -> str | None:
    from fusionnet_keras.pretrained.registry import sha256_file

    try:
        return sha256_file(path)
    except OSError:
        return None


def fetch(value: str, cache=None, timeout: float = 60.0) -> Path:
    """The local copy of the file at the URL ``value`` (``...#sha256=HEX``), downloaded if not cached.

    Errors (one line): a URL without a sha256, no network or an HTTP error, a
    download cut short, a file whose sha256 differs from the URL's.
    """
    url, expected, name = parse_url(value)
    target = Path(cache_dir() if cache is None else cache) / "downloads" / expected / name
    if target.is_file() and _digest(target) == expected:
        return target
    _download(url, expected, target, timeout)
    return target


def _download(url: str, expected: str, target: Path, timeout: float) -> None:
    import http.client
    import urllib.error
    import urllib.request

    from fusionnet_keras.utils.atomic import atomic_path

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_path(target) as tmp:
            length = response.headers.get("Content-Length")
            digest, size = hashlib.sha256(), 0
            with open(tmp, "wb") as fh:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    fh.write(chunk)
                    size += len(chunk)
            if length is not None and length.isdigit() and size != int(length):
                raise FusionNetError(f"the download of {url} was cut short ({size} of {length} bytes); try again")
            if digest.hexdigest() != expected:
                raise FusionNetError(f"the download of {url} has sha256 {digest.hexdigest()}, not the URL's "
                                     f"{expected}: refused")
    except http.client.IncompleteRead as e:
        raise FusionNetError(f"the download of {url} was cut short ({e.expected} bytes missing); try again") from None
    except http.client.HTTPException as e:
        raise FusionNetError(f"cannot download {url}: {type(e).__name__} {e}".strip()) from None
    except urllib.error.HTTPError as e:
        raise FusionNetError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise FusionNetError(f"cannot download {url}: {e.reason} (no network? give a local file instead)") from None
    except (TimeoutError, ConnectionError) as e:
        raise FusionNetError(f"cannot download {url}: {e or type(e).__name__} (no network? give a local file "
                             "instead)") from None
    except OSError as e:
        if e.filename:  # the cache folder: not writable, full
            raise FusionNetError(f"cannot write the download cache {target.parent}: {e.strerror}") from None
        raise FusionNetError(f"cannot download {url}: {e.strerror or e} (a connection error)") from None
