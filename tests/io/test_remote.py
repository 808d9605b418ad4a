"""Remote sources read from real servers on 127.0.0.1: S3 (moto's server) and
plain HTTP (``http.server``); every value is compared with the local copy."""

from __future__ import annotations

import subprocess
import sys
import time

import cloudpickle
import numpy as np
import pytest
import zarr

import zarrdask as zd
from zarrdask.errors import RemoteAccessError, SourceNotFoundError
from zarrdask.io.recipe import open_facts, recipe_of

SLIDES = ["slide_v3.zarr", "slide_v2.zarr"]


def _local_level(files, slide: str, level: int) -> np.ndarray:
    return zarr.open_array(f"{files.local(slide)}/{level}", mode="r")[...]


def _assert_no_secret(text: str, server) -> None:
    assert server.secret not in text
    assert server.key not in text


# --------------------------------------------------------------------- S3 zarr


@pytest.mark.parametrize("slide", SLIDES)
@pytest.mark.parametrize("level", [0, 1])
def test_s3_zarr_level_equals_local_store(s3_server, remote_files,
                                          slide: str, level: int):
    url = s3_server.url(slide)
    arr = zd.open_image(url, level=level, storage_options=s3_server.storage_options)
    expected = _local_level(remote_files, slide, level)
    assert arr.dims == ("c", "y", "x")
    assert arr.shape == expected.shape == (3, 512 // 2**level, 512 // 2**level)
    assert arr.attrs["source"] == url
    assert arr.attrs["level"] == level
    assert open_facts(arr)["scale"] == {"y": 0.5 * 2**level, "x": 0.5 * 2**level}
    assert open_facts(arr)["units"] == {"y": "micrometer", "x": "micrometer"}
    assert float(arr.x[3]) == pytest.approx(3 * 0.5 * 2**level)
    np.testing.assert_array_equal(arr.values, expected)


def test_s3_roi_reads_only_the_box(s3_server, remote_files):
    arr = zd.open_image(s3_server.url("slide_v3.zarr"), roi="(0,100,200):(-1,50,60)",
                        storage_options=s3_server.storage_options)
    expected = _local_level(remote_files, "slide_v3.zarr", 0)[:, 100:150, 200:260]
    assert arr.shape == (3, 50, 60)
    np.testing.assert_array_equal(arr.values, expected)


def test_s3_pyramid_has_both_levels_with_values(s3_server, remote_files):
    tree = zd.open_pyramid(s3_server.url("slide_v2.zarr"),
                           storage_options=s3_server.storage_options)
    assert tree.attrs["levels"] == ["0", "1"]
    for i, name in enumerate(tree.attrs["levels"]):
        image = tree[name]["image"]
        assert open_facts(image)["scale"] == {"y": 0.5 * 2**i, "x": 0.5 * 2**i}
        np.testing.assert_array_equal(image.values, _local_level(remote_files, "slide_v2.zarr", i))


# ------------------------------------------------------------------- HTTP zarr


@pytest.mark.parametrize("slide", SLIDES)
def test_http_pyramid_equals_local_store(http_server: str, remote_files, slide: str):
    url = f"{http_server}/{slide}"
    tree = zd.open_pyramid(url)
    assert tree.attrs["source"] == url
    assert tree.attrs["levels"] == ["0", "1"]
    for i, name in enumerate(tree.attrs["levels"]):
        image = tree[name]["image"]
        assert image.dims == ("c", "y", "x")
        assert open_facts(image)["scale"] == {"y": 0.5 * 2**i, "x": 0.5 * 2**i}
        np.testing.assert_array_equal(image.values, _local_level(remote_files, slide, i))


def test_http_open_image_with_trailing_slash_and_level(http_server: str,
                                                       remote_files):
    arr = zd.open_image(f"{http_server}/slide_v3.zarr/", level=1)
    np.testing.assert_array_equal(arr[:, 10:90, 20:100].values,
                                  _local_level(remote_files, "slide_v3.zarr", 1)[:, 10:90, 20:100])


# ----------------------------------------------------------------- TIFF / PNG


def test_s3_tiff_reads_its_pixels(s3_server, remote_files):
    arr = zd.open_image(s3_server.url("image.tif"), storage_options=s3_server.storage_options)
    assert arr.attrs["reader"] == "tiff"
    assert arr.dims == ("y", "x", "c")
    assert arr.shape == remote_files.tiff.shape
    np.testing.assert_array_equal(arr.values, remote_files.tiff)
    np.testing.assert_array_equal(arr[40:70, 33:99].values, remote_files.tiff[40:70, 33:99])


def test_s3_png_reads_its_pixels(s3_server, remote_files):
    arr = zd.open_image(s3_server.url("image.png"), storage_options=s3_server.storage_options)
    assert arr.attrs["reader"] == "pil"
    assert arr.dims == ("y", "x", "c")
    np.testing.assert_array_equal(arr.values, remote_files.png)


@pytest.mark.parametrize("name", ["image.tif", "image.png"])
def test_http_flat_files_read_their_pixels(http_server: str, remote_files, name: str):
    arr = zd.open_image(f"{http_server}/{name}")
    expected = remote_files.tiff if name.endswith(".tif") else remote_files.png
    np.testing.assert_array_equal(arr.values, expected)


@pytest.mark.parametrize("where", ["s3", "http"])
def test_zarr_store_without_suffix_is_found_by_its_metadata(s3_server, http_server: str,
                                                            remote_files, where: str):
    if where == "s3":
        arr = zd.open_image(s3_server.url("slide_plain"), storage_options=s3_server.storage_options)
    else:
        arr = zd.open_image(f"{http_server}/slide_plain")
    assert arr.attrs["reader"] == "zarr"
    assert open_facts(arr)["scale"] == {"y": 0.5, "x": 0.5}
    np.testing.assert_array_equal(arr.values, _local_level(remote_files, "slide_plain", 0))


# -------------------------------------------------------------------- pickling


@pytest.mark.parametrize("name", ["slide_v3.zarr", "image.tif", "image.png"])
def test_s3_dataarray_computes_after_cloudpickle(s3_server, remote_files,
                                                 name: str):
    arr = zd.open_image(s3_server.url(name), storage_options=s3_server.storage_options)
    expected = arr.values
    payload = cloudpickle.dumps(arr)
    # the recipe travels, not an open filesystem or a decoded image
    assert b"S3FileSystem" not in payload
    assert len(payload) < expected.nbytes
    restored = cloudpickle.loads(payload)
    np.testing.assert_array_equal(restored.values, expected)


def test_pickled_http_pyramid_level_reopens_in_a_fresh_process(http_server: str,
                                                               remote_files):
    arr = zd.open_image(f"{http_server}/slide_v2.zarr", level=1)
    code = (
        "import sys, cloudpickle, numpy as np\n"
        "arr = cloudpickle.loads(sys.stdin.buffer.read())\n"
        "sys.stdout.write(repr(int(arr.values.astype(np.int64).sum())))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], input=cloudpickle.dumps(arr),
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()
    expected = _local_level(remote_files, "slide_v2.zarr", 1).astype(np.int64).sum()
    assert int(done.stdout) == int(expected)


# ----------------------------------------------------------------- credentials


def test_credentials_never_shown(s3_server):
    arr = zd.open_image(s3_server.url("slide_v3.zarr"), storage_options=s3_server.storage_options)
    recipe = recipe_of(arr)
    assert recipe.storage_options["secret"] == s3_server.secret  # workers still get them
    _assert_no_secret(repr(arr), s3_server)
    _assert_no_secret(repr(recipe), s3_server)
    _assert_no_secret(str(recipe.public()), s3_server)
    _assert_no_secret(repr(arr.attrs), s3_server)
    _assert_no_secret(repr(arr.data), s3_server)
    assert recipe.public()["storage_options"]["secret"] == "***"
    tree = zd.open_pyramid(s3_server.url("slide_v3.zarr"),
                           storage_options=s3_server.storage_options)
    _assert_no_secret(repr(tree), s3_server)


@pytest.mark.timeout(60)
def test_error_messages_hide_credentials(s3_server, closed_port: int):
    bad_endpoint = {**s3_server.storage_options, "endpoint_url": f"http://127.0.0.1:{closed_port}"}
    for url, options in [
        (s3_server.url("missing.zarr"), s3_server.storage_options),
        (s3_server.url("missing.png"), s3_server.storage_options),
        (s3_server.url("slide_v3.zarr"), bad_endpoint),
        # credentials put in the URL itself are hidden too
        (f"http://user:{s3_server.secret}@127.0.0.1:{closed_port}/slide.zarr", {}),
    ]:
        with pytest.raises((SourceNotFoundError, RemoteAccessError)) as info:
            zd.open_image(url, storage_options=options)
        _assert_no_secret(str(info.value), s3_server)


# ---------------------------------------------------------------------- errors


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["slide_v3.zarr", "image.tif", "image.png"])
def test_unreachable_s3_endpoint_fails_fast_and_names_it(s3_server, closed_port: int,
                                                         name: str):
    endpoint = f"http://127.0.0.1:{closed_port}"
    options = {**s3_server.storage_options, "endpoint_url": endpoint}
    start = time.monotonic()
    with pytest.raises(RemoteAccessError) as info:
        zd.open_image(s3_server.url(name), storage_options=options)
    assert time.monotonic() - start < 15
    message = str(info.value)
    assert endpoint in message
    assert s3_server.url(name) in message
    assert "endpoint_url" in message  # the fix


@pytest.mark.timeout(60)
def test_unreachable_http_endpoint_fails_fast_and_names_it(closed_port: int):
    url = f"http://127.0.0.1:{closed_port}/slide_v3.zarr"
    start = time.monotonic()
    with pytest.raises(RemoteAccessError) as info:
        zd.open_pyramid(url)
    assert time.monotonic() - start < 15
    assert f"127.0.0.1:{closed_port}" in str(info.value)


@pytest.mark.timeout(60)
def test_silent_s3_endpoint_gives_up_within_the_read_timeout(s3_server,
                                                             silent_endpoint: str):
    options = {**s3_server.storage_options, "endpoint_url": silent_endpoint,
               "config_kwargs": {"read_timeout": 1}}
    start = time.monotonic()
    with pytest.raises(RemoteAccessError) as info:
        zd.open_image(s3_server.url("slide_v3.zarr"), storage_options=options)
    # botocore (2 attempts) x s3fs (bounded retries) x 1 s, not minutes
    assert time.monotonic() - start < 15
    assert silent_endpoint in str(info.value)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["missing.zarr", "slide_v3.zarr/9", "missing.tif", "missing.png"])
def test_missing_key_in_existing_bucket_is_source_not_found(s3_server, name: str):
    start = time.monotonic()
    with pytest.raises(SourceNotFoundError) as info:
        zd.open_image(s3_server.url(name), storage_options=s3_server.storage_options)
    assert time.monotonic() - start < 15
    assert s3_server.url(name) in str(info.value)
    assert s3_server.endpoint_url in str(info.value)


@pytest.mark.timeout(60)
def test_missing_http_store_is_source_not_found(http_server: str):
    url = f"{http_server}/nothing_here.zarr"
    with pytest.raises(SourceNotFoundError, match="nothing_here.zarr"):
        zd.open_image(url)


# ------------------------------------------------------------ zarrdataset API


def test_connect_s3_on_an_endpoint_url(s3_server):
    info = zd.connect_s3(f"{s3_server.endpoint_url}/{s3_server.bucket}/slide_v3.zarr")
    assert info is not None
    assert info["bucket_name"] == s3_server.bucket
    assert info["endpoint_url"] == s3_server.endpoint_url
    listing = info["s3"].ls(s3_server.bucket)
    assert f"{s3_server.bucket}/slide_v3.zarr" in listing
    assert f"{s3_server.bucket}/image.png" in listing


def test_connect_s3_is_none_for_local_paths(remote_files):
    assert zd.connect_s3(remote_files.local("slide_v3.zarr")) is None
    assert zd.connect_s3("s3data/slide.zarr") is None


def test_isconsolidated_over_http_and_local(http_server: str, tmp_path):
    assert zd.isconsolidated(f"{http_server}/slide_v3.zarr") is True
    assert zd.isconsolidated(f"{http_server}/slide_v2.zarr") is True
    plain = tmp_path / "plain.zarr"
    group = zarr.open_group(plain, mode="w", zarr_format=3)
    group.create_array("0", shape=(8, 8), dtype="uint8")
    assert zd.isconsolidated(str(plain)) is False
    plain_v2 = tmp_path / "plain_v2.zarr"
    zarr.open_group(plain_v2, mode="w", zarr_format=2).create_array("0", shape=(4,), dtype="u1")
    assert zd.isconsolidated(str(plain_v2)) is False


def test_isconsolidated_over_s3_with_storage_options(s3_server):
    options = s3_server.storage_options
    assert zd.isconsolidated(s3_server.url("slide_v2.zarr"), storage_options=options) is True
    assert zd.isconsolidated(s3_server.url("missing.zarr"), storage_options=options) is False


@pytest.mark.timeout(60)
def test_isconsolidated_on_an_unreachable_server_raises(closed_port: int):
    with pytest.raises(RemoteAccessError, match=f"127.0.0.1:{closed_port}"):
        zd.isconsolidated(f"http://127.0.0.1:{closed_port}/slide_v3.zarr")


@pytest.mark.timeout(60)
def test_pil_read_of_an_unreachable_url_is_a_remote_error_not_a_damaged_file(closed_port: int):
    # the read a worker does after open_image succeeded elsewhere: a network
    # failure must not be reported as a truncated or damaged image
    from zarrdask.io.pil_reader import discover_pil

    url = f"http://127.0.0.1:{closed_port}/image.png"
    with pytest.raises(RemoteAccessError) as info:
        discover_pil(url)
    assert f"127.0.0.1:{closed_port}" in str(info.value)
    assert "damaged" not in str(info.value)
