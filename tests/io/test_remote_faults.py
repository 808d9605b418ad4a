"""Remote stores that fail — silent, answering garbage, going away while a
slide is read — give a RemoteAccessError naming the endpoint and the image
(and the chunk, when reading pixels), within bounded timeouts and retries
that storage_options can change. Every test is bounded by pytest-timeout;
none asserts a duration."""

from __future__ import annotations

import re

import aiohttp
import pytest

import zarrdask as zd
from zarrdask.errors import OptionError, RemoteAccessError
from zarrdask.io.location import (
    DEFAULT_S3_TIMEOUTS,
    get_filesystem,
    remote_storage_options,
)
from zarrdask.io.recipe import clear_open_cache

NAMES = ["slide_v3.zarr", "image.tif", "image.png"]

#: Short timeouts for the tests that are not about the defaults.
FAST_S3 = {"config_kwargs": {"connect_timeout": 1, "read_timeout": 1,
                             "retries": {"total_max_attempts": 1}}}
FAST_HTTP = {"client_kwargs": {"timeout": {"connect": 1, "sock_read": 1}}}


def _target(scheme: str, endpoint: str, name: str, s3_server, fast: bool = False
            ) -> tuple[str, dict | None]:
    """URL and storage_options of ``name`` served at ``endpoint``."""
    if scheme == "s3":
        options = {**s3_server.storage_options, "endpoint_url": endpoint}
        return s3_server.url(name), {**options, **FAST_S3} if fast else options
    return f"{endpoint}/{name}", (dict(FAST_HTTP) if fast else None)


def _assert_names(error: BaseException, endpoint: str, url: str) -> None:
    message = str(error)
    assert isinstance(error, RemoteAccessError) and isinstance(error, ConnectionError)
    assert endpoint in message, message
    assert url in message, message


# ------------------------------------------------------------- the defaults

@pytest.mark.timeout(50)
@pytest.mark.parametrize("scheme, name", [("s3", "slide_v3.zarr"), ("http", "image.tif")])
def test_silent_endpoint_fails_with_the_default_timeouts(s3_server, silent_endpoint: str,
                                                         scheme: str, name: str):
    url, options = _target(scheme, silent_endpoint, name, s3_server)
    with pytest.raises(RemoteAccessError) as info:
        zd.open_image(url, storage_options=options)
    _assert_names(info.value, silent_endpoint, url)
    assert "timeout" in str(info.value).lower()


def test_default_timeouts_and_retries_are_bounded_and_options_win(s3_server):
    s3 = remote_storage_options("s3://bucket/a.zarr", {"endpoint": "http://127.0.0.1:9"})
    assert s3["endpoint_url"] == "http://127.0.0.1:9"
    assert s3["config_kwargs"] == DEFAULT_S3_TIMEOUTS
    assert DEFAULT_S3_TIMEOUTS["retries"]["total_max_attempts"] <= 3
    assert DEFAULT_S3_TIMEOUTS["read_timeout"] <= 10
    mine = remote_storage_options("s3://bucket/a.zarr",
                                  {"config_kwargs": {"read_timeout": 60}})
    assert mine["config_kwargs"]["read_timeout"] == 60
    assert mine["config_kwargs"]["connect_timeout"] == DEFAULT_S3_TIMEOUTS["connect_timeout"]
    # the filesystem really gets them
    fs, _ = get_filesystem(s3_server.url("slide_v3.zarr"),
                           {**s3_server.storage_options, "config_kwargs": {"read_timeout": 7}})
    assert fs.config_kwargs["read_timeout"] == 7
    assert fs.config_kwargs["retries"] == DEFAULT_S3_TIMEOUTS["retries"]
    fs.ls(s3_server.bucket)  # botocore has used (and rewritten) its copy of the retries
    assert DEFAULT_S3_TIMEOUTS["retries"] == {"total_max_attempts": 3, "mode": "standard"}

    http = remote_storage_options("http://127.0.0.1:9/a.tif")["client_kwargs"]["timeout"]
    assert http.connect == DEFAULT_S3_TIMEOUTS["connect_timeout"]
    assert http.sock_read == DEFAULT_S3_TIMEOUTS["read_timeout"]
    given = remote_storage_options("http://127.0.0.1:9/a.tif",
                                   {"client_kwargs": {"timeout": {"sock_read": 30}}})
    assert given["client_kwargs"]["timeout"] == aiohttp.ClientTimeout(
        total=None, connect=DEFAULT_S3_TIMEOUTS["connect_timeout"], sock_read=30)
    native = aiohttp.ClientTimeout(total=90)
    assert remote_storage_options("https://h/a.tif", {"client_kwargs": {"timeout": native}}
                                  )["client_kwargs"]["timeout"] is native


@pytest.mark.parametrize("timeout", [{"read": 3}, "30", 30])
def test_malformed_http_timeout_is_an_option_error(timeout):
    with pytest.raises(OptionError, match="timeout"):
        zd.open_image("http://127.0.0.1:9/a.tif",
                      storage_options={"client_kwargs": {"timeout": timeout}})


# ------------------------------------------------------------------ opening

@pytest.mark.timeout(60)
@pytest.mark.parametrize("opener", [zd.open_image, zd.open_pyramid], ids=["image", "pyramid"])
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scheme", ["s3", "http"])
def test_garbage_answers_are_remote_access_errors(s3_server, garbage_endpoint: str,
                                                  scheme: str, name: str, opener):
    url, options = _target(scheme, garbage_endpoint, name, s3_server)
    with pytest.raises(RemoteAccessError) as info:
        opener(url, storage_options=options)
    _assert_names(info.value, garbage_endpoint, url)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scheme", ["s3", "http"])
def test_silent_endpoint_with_short_configured_timeouts(s3_server, silent_endpoint: str,
                                                        scheme: str, name: str):
    url, options = _target(scheme, silent_endpoint, name, s3_server, fast=True)
    with pytest.raises(RemoteAccessError) as info:
        zd.open_pyramid(url, storage_options=options)
    _assert_names(info.value, silent_endpoint, url)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", ["silent", "garbage"])
@pytest.mark.parametrize("scheme, name", [("s3", "slide_v3.zarr"), ("http", "image.tif")])
def test_build_table_names_the_image_and_the_endpoint(s3_server, silent_endpoint: str,
                                                      garbage_endpoint: str, fault: str,
                                                      scheme: str, name: str):
    endpoint = silent_endpoint if fault == "silent" else garbage_endpoint
    url, options = _target(scheme, endpoint, name, s3_server, fast=True)
    spec = {"source": url, "storage_options": options} if options else url
    with pytest.raises(RemoteAccessError) as info:
        zd.build_table([spec], patch_size=32)
    _assert_names(info.value, endpoint, url)


# ---------------------------------------------------------- reading pixels

@pytest.mark.timeout(90)
@pytest.mark.parametrize("fault", ["silent", "garbage"])
@pytest.mark.parametrize("scheme", ["s3", "http"])
def test_store_failing_while_pixels_are_read_names_the_chunk(s3_server, s3_proxy, http_proxy,
                                                             scheme: str, fault: str):
    proxy = s3_proxy if scheme == "s3" else http_proxy
    url, options = _target(scheme, proxy.url, "slide_v3.zarr", s3_server, fast=True)
    clear_open_cache()
    image = zd.open_image(url, storage_options=options)
    assert int(image[:, :8, :8].values.sum()) > 0  # read through the proxy
    proxy.set_mode(fault)
    with pytest.raises(RemoteAccessError) as info:
        image.values  # noqa: B018 - reading is the point
    _assert_names(info.value, proxy.url, url)
    assert re.search(r"chunk c/0/\d+/\d+", str(info.value)), str(info.value)
    clear_open_cache()


@pytest.mark.timeout(60)
def test_means_missing_tells_a_404_from_a_failure_reported_as_not_found(
        http_server: str, garbage_endpoint: str):
    from zarrdask.io.location import means_missing

    fs, _ = get_filesystem(f"{http_server}/image.tif")
    with pytest.raises(FileNotFoundError) as missing:
        fs.info(f"{http_server}/no-such-file.tif")
    assert means_missing(missing.value)
    fs, _ = get_filesystem(f"{garbage_endpoint}/image.tif")
    with pytest.raises(FileNotFoundError) as hidden:  # what fsspec calls it
        fs.info(f"{garbage_endpoint}/image.tif")
    assert not means_missing(hidden.value)
    assert not means_missing(TimeoutError("read timed out"))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scheme, most", [("s3", 3), ("http", 2)])
def test_store_without_suffix_on_a_silent_endpoint_gives_up_at_the_first_probe(
        s3_server, silent_proxy, scheme: str, most: int):
    # the zarr markers are probed one by one: a timeout on the first one is
    # the answer, not a reason to try the next markers and then the reader
    # of flat files (each waiting its own timeouts)
    if scheme == "s3":
        url = s3_server.url("slide_plain")
        options = {**s3_server.storage_options, "endpoint_url": silent_proxy.url,
                   "config_kwargs": {"connect_timeout": 1, "read_timeout": 1}}
    else:
        url, options = f"{silent_proxy.url}/slide_plain", dict(FAST_HTTP)
    with pytest.raises(RemoteAccessError) as info:
        zd.open_image(url, storage_options=options)
    _assert_names(info.value, silent_proxy.url, url)
    # S3: 3 attempts of one HEAD (the default retries); HTTP: fsspec's HEAD, then GET
    assert silent_proxy.accepted <= most
