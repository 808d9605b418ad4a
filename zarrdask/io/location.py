"""Where a source lives: local paths and URLs, fsspec filesystems, secrets.

Remote paths go through fsspec (``s3://`` via s3fs, ``http(s)://`` via
aiohttp). Storage options may hold credentials: they travel to workers inside
pickles (workers must read too) but never appear in a repr, a log line or
anything written to disk; :func:`redact_options` is the one place that
decides what is secret.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from ..errors import OptionError, RemoteAccessError, SourceNotFoundError, ZarrdaskError

__all__ = [
    "is_remote",
    "protocol_of",
    "redact_options",
    "get_filesystem",
    "remote_error",
    "connect_s3",
    "endpoint_of",
    "check_storage_options",
    "remote_storage_options",
    "means_missing",
    "DEFAULT_S3_TIMEOUTS",
    "S3FS_RETRIES",
]

_SECRET_WORDS = ("secret", "token", "password", "key", "credential", "session")

#: Connection settings that make an unreachable or silent endpoint fail
#: within seconds: botocore's ``config_kwargs`` (connect and socket-read
#: timeouts in seconds, 3 attempts in all with botocore's standard backoff).
#: The read timeout bounds each wait for bytes, not a whole transfer.
DEFAULT_S3_TIMEOUTS: dict[str, Any] = {
    "connect_timeout": 3,
    "read_timeout": 5,
    "retries": {"total_max_attempts": 3, "mode": "standard"},
}

#: How many times s3fs itself tries a call (its default is 5). s3fs nests its
#: retry loops (``cat_file`` around ``info`` and ``GetObject``) on top of
#: botocore's own retries (``DEFAULT_S3_TIMEOUTS["retries"]``, which already
#: cover connection errors, read timeouts, 5xx and throttling), so the tries
#: multiply: with s3fs's default an endpoint that accepts connections and
#: never answers takes minutes to fail. Raise it (or pass
#: ``config_kwargs={"retries": {...}}``) for flaky networks.
S3FS_RETRIES = 1


def check_storage_options(storage_options: object, *, source: object = None
                          ) -> dict[str, Any]:
    """``storage_options`` as a dict, or an :class:`OptionError` saying what
    to pass.

    Parameters
    ----------
    storage_options : mapping or None
        fsspec options given by the caller.
    source : object, optional
        The source they are for (named in the message).

    Returns
    -------
    dict
        A copy (empty for None).

    Raises
    ------
    OptionError
        Anything but None or a mapping with string keys (e.g. the string
        ``"anon"``, a JSON text, a list of pairs).
    """
    if storage_options is None:
        return {}
    where = f" for {source}" if isinstance(source, str | os.PathLike) else ""
    if not isinstance(storage_options, Mapping):
        hint = (f"{{{storage_options!r}: True}}" if isinstance(storage_options, str)
                and storage_options.isidentifier() else "{'anon': True}")
        raise OptionError(
            f"storage_options{where} must be a dict of fsspec options, got the "
            f"{type(storage_options).__name__} {storage_options!r}; pass e.g. "
            f"storage_options={hint}"
        )
    bad = [k for k in storage_options if not isinstance(k, str)]
    if bad:
        raise OptionError(
            f"storage_options{where} has non-string keys {bad!r}; fsspec options are "
            "keyword arguments: pass e.g. {'anon': True, 'endpoint_url': 'http://host:9000'}"
        )
    return dict(storage_options)


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
        if isinstance(value, Mapping):
            out[name] = redact_options(value)
        elif _is_secret_name(name) and value not in (None, ""):
            out[name] = "***"
        else:
            out[name] = value
    return out


def _is_secret_name(name: object) -> bool:
    """Whether an option of this name holds a secret (``key``, ``token``...)."""
    lowered = str(name).lower()
    return any(word in lowered for word in _SECRET_WORDS)


def _with_s3_defaults(options: Mapping[str, Any]) -> dict[str, Any]:
    opts = dict(options)
    endpoint = opts.pop("endpoint", None)
    if endpoint is not None:
        opts.setdefault("endpoint_url", endpoint)
    # deep copies: botocore rewrites the ``retries`` dict it is given
    config = copy.deepcopy(DEFAULT_S3_TIMEOUTS)
    config.update(copy.deepcopy(dict(opts.get("config_kwargs") or {})))
    opts["config_kwargs"] = config
    opts.setdefault("skip_instance_cache", False)
    return opts


def get_filesystem(location: str, storage_options: Mapping[str, Any] | None = None, *,
                   asynchronous: bool = False):
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
    asynchronous : bool
        Create the asynchronous flavour of the filesystem when it has one
        (what zarr's ``FsspecStore`` drives from its own event loop).

    Returns
    -------
    fs : fsspec.AbstractFileSystem
    path : str
    """
    import fsspec

    protocol = protocol_of(location)
    options = remote_storage_options(location, storage_options)
    if protocol == "file":
        return fsspec.filesystem("file"), os.path.abspath(os.path.expanduser(location))
    if asynchronous:
        try:
            if fsspec.get_filesystem_class(protocol).async_impl:
                options["asynchronous"] = True
        except (ImportError, ValueError):
            pass  # url_to_fs below raises the informative error
    fs, path = fsspec.core.url_to_fs(location, **options)
    if protocol in ("s3", "s3a"):
        _bound_s3fs_retries(fs)
    return fs, path


def _bound_s3fs_retries(fs: Any) -> None:
    """Cap the retry count of an ``s3fs.S3FileSystem`` (a class attribute that
    its constructor does not take) at :data:`S3FS_RETRIES`."""
    if getattr(fs, "retries", 0) > S3FS_RETRIES:
        fs.retries = S3FS_RETRIES


def _with_http_defaults(options: Mapping[str, Any]) -> dict[str, Any]:
    """HTTP options: no link scraping of index pages, bounded connect and
    read times (``client_kwargs["timeout"]``: an ``aiohttp.ClientTimeout`` or
    a dict of its fields, e.g. ``{"sock_read": 30}``)."""
    import aiohttp

    opts = dict(options)
    # zarr never needs directory listings over HTTP; plain servers answer
    # them with HTML pages whose links fsspec would otherwise follow.
    opts.setdefault("simple_links", False)
    client = dict(opts.get("client_kwargs") or {})
    timeout = client.get("timeout")
    if not isinstance(timeout, aiohttp.ClientTimeout):
        fields = {"total": None, "connect": DEFAULT_S3_TIMEOUTS["connect_timeout"],
                  "sock_read": DEFAULT_S3_TIMEOUTS["read_timeout"]}
        if isinstance(timeout, Mapping):
            unknown = sorted(set(map(str, timeout)) - {"total", "connect", "sock_read",
                                                       "sock_connect", "ceil_threshold"})
            if unknown:
                raise OptionError(
                    f"storage_options client_kwargs['timeout'] has unknown fields {unknown}; "
                    "pass aiohttp.ClientTimeout fields: total, connect, sock_connect, sock_read"
                )
            fields.update(timeout)
        elif timeout is not None:
            raise OptionError(
                f"storage_options client_kwargs['timeout']={timeout!r}: pass an "
                "aiohttp.ClientTimeout or a dict of its fields, e.g. {'sock_read': 30}"
            )
        client["timeout"] = aiohttp.ClientTimeout(**fields)
    opts["client_kwargs"] = client
    return opts


def remote_storage_options(location: str, storage_options: Mapping[str, Any] | None = None
                           ) -> dict[str, Any]:
    """The fsspec options zarrdask uses for ``location``: the caller's,
    completed with bounded timeouts and retries.

    Parameters
    ----------
    location : str
        Local path or URL.
    storage_options : mapping, optional
        The caller's options; theirs win over every default.

    Returns
    -------
    dict
        For ``s3://``: ``config_kwargs`` with ``connect_timeout`` 3 s,
        ``read_timeout`` 5 s and ``retries={"max_attempts": 2}`` unless given
        (``endpoint`` becomes ``endpoint_url``). For ``http(s)://``:
        ``client_kwargs["timeout"]`` (connect 3 s, socket read 5 s) and
        ``simple_links=False``. Other locations: the options unchanged.

    Raises
    ------
    OptionError
        ``storage_options`` that is not a mapping, or a malformed HTTP
        timeout.
    """
    options = check_storage_options(storage_options, source=location)
    protocol = protocol_of(location)
    if protocol in ("s3", "s3a"):
        return _with_s3_defaults(options)
    if protocol in ("http", "https"):
        return _with_http_defaults(options)
    return options


def endpoint_of(location: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """The server a location is read from, for messages.

    Parameters
    ----------
    location : str
        URL of the source.
    storage_options : mapping, optional
        fsspec options (``endpoint_url`` for S3-compatible servers).

    Returns
    -------
    str
        ``scheme://host:port`` of the server (never with credentials), or
        ``"the default AWS S3 endpoint"`` for ``s3://`` without
        ``endpoint_url``.
    """
    options = dict(storage_options or {})
    protocol = protocol_of(location)
    if protocol in ("s3", "s3a"):
        endpoint = options.get("endpoint_url") or options.get("endpoint") or (
            (options.get("client_kwargs") or {}).get("endpoint_url")
        )
        if not endpoint:
            return "the default AWS S3 endpoint"
        parsed = urlparse(str(endpoint))
    else:
        parsed = urlparse(location)
    host = parsed.hostname or ""
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{host}{port}" if parsed.scheme else str(parsed.path)


def _scrub(text: str, storage_options: Mapping[str, Any] | None) -> str:
    """``text`` with every secret value of ``storage_options`` and any
    ``user:password@`` part of a URL replaced by ``***``."""
    for value in _secret_values(storage_options):
        text = text.replace(value, "***")
    return re.sub(r"(://)[^/@\s]+@", r"\1***@", text)


def _secret_values(options: Mapping[str, Any] | None) -> list[str]:
    out: list[str] = []
    for name, value in (options or {}).items():
        if isinstance(value, Mapping):
            out.extend(_secret_values(value))
        elif _is_secret_name(name) and isinstance(value, str):
            if len(value) >= 3:
                out.append(value)
    return out


def remote_error(location: str, storage_options: Mapping[str, Any] | None, exc: BaseException
                 ) -> ZarrdaskError:
    """Translate a filesystem exception into a zarrdask error.

    Parameters
    ----------
    location : str
        The URL that was being read.
    storage_options : mapping, optional
        The fsspec options used (only redacted facts reach the message).
    exc : BaseException
        What the filesystem raised.

    Returns
    -------
    SourceNotFoundError or RemoteAccessError
        An error whose message names the location, the endpoint and the fix,
        and never holds a secret of ``storage_options`` (``exc`` itself when
        it is already a zarrdask error). A ``FileNotFoundError`` caused by a
        timeout or a garbled answer (fsspec's HTTP probes) is a
        ``RemoteAccessError``, not "does not exist".
    """
    if isinstance(exc, ZarrdaskError):  # already typed (e.g. a malformed option)
        return exc
    where = f"{_scrub(location, storage_options)} (endpoint {endpoint_of(location, storage_options)})"
    s3 = protocol_of(location) in ("s3", "s3a")
    if isinstance(exc, FileNotFoundError) and _hidden_failure(exc) is not None:
        # fsspec's HTTP filesystem reports any failure of its HEAD and GET
        # probes (timeouts, refused or garbled answers) as "not found"
        exc = _hidden_failure(exc)
    if isinstance(exc, FileNotFoundError):
        fix = ("check the bucket/key spelling, or pass the right 'storage_options' "
               "(endpoint_url of the S3 server, anon=True for public data)" if s3 else
               "check the URL (the server answered, but has nothing at that path)")
        return SourceNotFoundError(f"{where} does not exist; {fix}")
    detail = _scrub(f"{type(exc).__name__}: {exc}", storage_options)
    if isinstance(exc, PermissionError) or _is_denied(exc):
        fix = ("pass credentials that may read it in 'storage_options' (key/secret or "
               "profile), or anon=True for public data" if s3 else
               "pass the credentials the server expects in 'storage_options' "
               "(e.g. client_kwargs={'headers': {...}})")
        return RemoteAccessError(f"access to {where} was refused ({detail}); {fix}")
    fix = ("check that the endpoint is up and reachable and that 'storage_options' holds "
           "the right endpoint_url and credentials (anon=True for public buckets)" if s3 else
           "check the host and port of the URL and that the server is up and reachable")
    return RemoteAccessError(f"cannot reach {where}: {detail}; {fix}")


def means_missing(exc: BaseException) -> bool:
    """Whether ``exc`` really says "no such object" (a missing zarr chunk is
    then its fill value), rather than a failure that fsspec's HTTP
    filesystem reports as ``FileNotFoundError`` (a timeout, a refused or
    garbled answer, a 5xx status).

    Use it where a fetch maps "not found" to something legitimate::

        try:
            return fs.cat_file(path)
        except Exception as exc:
            if means_missing(exc):
                return None
            raise remote_error(location, storage_options, exc) from exc
    """
    return isinstance(exc, FileNotFoundError) and _hidden_failure(exc) is None


def _hidden_failure(exc: FileNotFoundError) -> BaseException | None:
    """The access failure behind a ``FileNotFoundError`` that does not mean
    "not found" (None when it does: no cause, or an HTTP 404/410)."""
    cause = exc.__cause__
    if cause is None or isinstance(cause, FileNotFoundError):
        return None
    if getattr(cause, "status", None) in (404, 410):
        return None
    return cause


def _is_denied(exc: BaseException) -> bool:
    status = getattr(exc, "status", None)  # aiohttp.ClientResponseError
    return status in (401, 403)


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
    if not isinstance(filename_sample, str) or protocol_of(filename_sample) not in (
        "s3", "s3a", "http", "https"
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
    fs = s3fs.S3FileSystem(**options)
    _bound_s3fs_retries(fs)
    return {"bucket_name": bucket, "endpoint_url": endpoint, "s3": fs}
