"""Where a source lives: local paths and URLs, fsspec filesystems, secrets.

Remote paths go through fsspec (``s3://`` via s3fs, ``http(s)://`` via
aiohttp). Storage options may hold credentials: they travel to workers inside
pickles (workers must read too) but never appear in a repr, a log line or
anything written to disk; :func:`redact_options` is the one place that
decides what is secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from ..errors import RemoteAccessError, SourceNotFoundError

__all__ = [
    "is_remote",
    "protocol_of",
    "redact_options",
    "get_filesystem",
    "remote_error",
    "connect_s3",
    "DEFAULT_S3_TIMEOUTS",
]

_SECRET_WORDS = ("secret", "token", "password", "key", "credential", "session")

#: Connection settings that make an unreachable endpoint fail within seconds.
DEFAULT_S3_TIMEOUTS: dict[str, Any] = {
    "connect_timeout": 3,
    "read_timeout": 20,
    "retries": {"max_attempts": 2, "mode": "standard"},
}


def protocol_of(location: str) -> str:
    """``"file"`` for local paths, else the URL scheme (``s3``, ``http``...)."""
    scheme = urlparse(location).scheme
    if len(scheme) <= 1:  # "" or a Windows drive letter
        return "file"
    return scheme.lower()


def is_remote(location: object) -> bool:
    """Whether ``location`` is a URL of a remote filesystem."""
    return isinstance(location, str) and protocol_of(location) not in ("file", "memory")


def redact_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Copy of ``options`` with every secret-looking value replaced by ``"***"``.

    Keys such as ``key``, ``secret``, ``token``, ``aws_secret_access_key`` or
    ``password`` are secret; nested dicts (``client_kwargs``) are walked.
    """
    if not options:
        return {}
    out: dict[str, Any] = {}
    for name, value in options.items():
        lowered = str(name).lower()
        if isinstance(value, Mapping):
            out[name] = redact_options(value)
        elif any(word in lowered for word in _SECRET_WORDS) and value not in (None, ""):
            out[name] = "***"
        else:
            out[name] = value
    return out


def _with_s3_defaults(options: Mapping[str, Any]) -> dict[str, Any]:
    opts = dict(options)
    endpoint = opts.pop("endpoint", None)
    if endpoint is not None:
        opts.setdefault("endpoint_url", endpoint)
    config = dict(DEFAULT_S3_TIMEOUTS)
    config.update(opts.get("config_kwargs") or {})
    opts["config_kwargs"] = config
    opts.setdefault("skip_instance_cache", False)
    return opts


def get_filesystem(location: str, storage_options: Mapping[str, Any] | None = None):
    """The fsspec filesystem and the path inside it for ``location``.

    Parameters
    ----------
    location : str
        Local path or URL.
    storage_options : mapping, optional
        Passed to the fsspec filesystem (for S3: ``endpoint_url``, ``anon``,
        ``key``/``secret``...). ``endpoint`` is accepted as an alias of
        ``endpoint_url``; short connect timeouts are added so an unreachable
        endpoint fails within seconds.

    Returns
    -------
    fs : fsspec.AbstractFileSystem
    path : str
    """
    import fsspec

    protocol = protocol_of(location)
    options = dict(storage_options or {})
    if protocol in ("s3", "s3a"):
        options = _with_s3_defaults(options)
    if protocol == "file":
        return fsspec.filesystem("file"), os.path.abspath(os.path.expanduser(location))
    fs, path = fsspec.core.url_to_fs(location, **options)
    return fs, path


def remote_error(location: str, storage_options: Mapping[str, Any] | None, exc: BaseException):
    """Translate a filesystem exception into a zarrdask error naming the
    location, the endpoint and the fix."""
    options = redact_options(storage_options)
    endpoint = options.get("endpoint_url") or options.get("endpoint") or (
        (options.get("client_kwargs") or {}).get("endpoint_url")
    )
    where = f"{location}" + (f" (endpoint {endpoint})" if endpoint else "")
    if isinstance(exc, FileNotFoundError):
        return SourceNotFoundError(
            f"{where} does not exist; check the bucket/path spelling, or pass the right "
            "'storage_options' (endpoint_url, anon=True for public data)"
        )
    return RemoteAccessError(
        f"cannot reach {where}: {type(exc).__name__}: {exc}; check that the endpoint is "
        "up and reachable and that 'storage_options' holds the right endpoint_url and "
        "credentials (anon=True for public buckets)"
    )


def connect_s3(filename_sample: str) -> dict | None:
    """Connection facts of the S3 endpoint named by ``filename_sample``.

    Parameters
    ----------
    filename_sample : str
        ``http(s)://endpoint/bucket/key`` or ``s3://bucket/key``.

    Returns
    -------
    dict or None
        ``{"bucket_name", "endpoint_url", "s3"}`` where ``s3`` is an anonymous
        ``s3fs.S3FileSystem`` on that endpoint; None for a local path.
    """
    if not (
        isinstance(filename_sample, str)
        and (filename_sample.startswith("s3") or filename_sample.startswith("http"))
    ):
        return None
    import s3fs

    parsed = urlparse(filename_sample)
    if parsed.scheme.startswith("s3"):
        endpoint = None
        bucket = parsed.netloc
    else:
        endpoint = f"{parsed.scheme}://{parsed.netloc}"
        bucket = parsed.path.lstrip("/").split("/")[0]
    options = _with_s3_defaults({"anon": True})
    if endpoint:
        options["endpoint_url"] = endpoint
    return {"bucket_name": bucket, "endpoint_url": endpoint, "s3": s3fs.S3FileSystem(**options)}
