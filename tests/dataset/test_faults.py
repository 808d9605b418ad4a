"""Vanished stores, remote faults and checksums in the training path: every
failure is a typed error naming the image, the chunk and the endpoint, never
a fill-value patch or a hang."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import zarr

from zarrdask.dataset import PatchDataset
from zarrdask.errors import CorruptChunkError, RemoteAccessError, SourceNotFoundError


@pytest.fixture
def slide_copy(slide3, tmp_path) -> str:
    """A private copy of the 1024² zarr v3 slide (the tests delete it)."""
    return shutil.copytree(slide3, tmp_path / "copy.zarr")


def test_store_deleted_mid_epoch_raises_instead_of_zero_patches(slide_copy, make_table):
    table = make_table([str(slide_copy)], patch=128)
    ds = PatchDataset(table, read_threads=0)
    it = iter(ds)
    first = next(it)
    assert first["images"].any()
    shutil.rmtree(slide_copy)
    with pytest.raises(SourceNotFoundError, match=r"(?s)image 0.*copy\.zarr.*chunk .*zarr\.json"):
        for _ in it:
            pass


def test_store_deleted_mid_epoch_raises_through_dataloader_workers(slide_copy, make_table):
    from torch.utils.data import DataLoader

    table = make_table([str(slide_copy)], patch=128)
    loader = iter(DataLoader(PatchDataset(table), batch_size=4, num_workers=1, prefetch_factor=1))
    assert next(loader)["images"].shape == (4, 3, 128, 128)
    shutil.rmtree(slide_copy)
    with pytest.raises(SourceNotFoundError, match=r"copy\.zarr.*zarr\.json"):
        for _ in loader:
            pass


def test_damaged_metadata_document_is_a_typed_error_naming_the_file(slide_copy, make_table):
    from zarrdask.errors import UnsupportedFormatError

    table = make_table([str(slide_copy)], patch=128)
    (slide_copy / "0" / "zarr.json").write_text("{not json")
    with pytest.raises(UnsupportedFormatError, match=r"(?s)image 0.*0/zarr\.json is not valid JSON"):
        next(iter(PatchDataset(table)))


def test_missing_chunk_of_a_present_array_is_still_the_fill_value(tmp_path, make_table):
    z = zarr.create_array(tmp_path / "sparse.zarr", shape=(256, 256), chunks=(64, 64),
                          dtype="u1", fill_value=9)
    z[:64, :] = 200  # row 0 of chunks written; the rest never were
    table = make_table([str(tmp_path / "sparse.zarr")], patch=64, axes="yx")
    values = {int(s["position"][0, 0]): np.unique(s["images"]).tolist()
              for s in PatchDataset(table)}
    assert values[0] == [200] and values[64] == values[192] == [9]


def test_sharded_store_deleted_mid_epoch_raises_through_zarr_python(tmp_path, make_table):
    z = zarr.create_array(tmp_path / "sharded.zarr", shape=(256, 256), chunks=(32, 32),
                          shards=(64, 64), dtype="u1")
    z[:] = 7
    table = make_table([str(tmp_path / "sharded.zarr")], patch=64, axes="yx")
    ds = PatchDataset(table)
    it = iter(ds)
    assert next(it)["images"].min() == 7
    assert list(ds.read_stats()["modes"].values()) == ["zarr"]
    shutil.rmtree(tmp_path / "sharded.zarr")
    with pytest.raises(SourceNotFoundError, match=r"sharded\.zarr"):
        for _ in it:
            pass


def _crc_array(path, data, *, blosc: bool = False) -> None:
    codecs = [zarr.codecs.BloscCodec(), zarr.codecs.Crc32cCodec()] if blosc else \
        [zarr.codecs.Crc32cCodec()]
    z = zarr.create_array(path, shape=data.shape, chunks=(64, 64), dtype=data.dtype,
                          compressors=codecs, zarr_format=3)
    z[:] = data


@pytest.mark.parametrize("blosc", [False, True])
def test_crc32c_chunks_are_verified_when_decoded_directly(tmp_path, make_table, blosc):
    data = (np.arange(128 * 128) % 251).astype(np.uint8).reshape(128, 128)
    path = tmp_path / "crc.zarr"
    _crc_array(path, data, blosc=blosc)
    table = make_table([str(path)], patch=64, axes="yx")
    ds = PatchDataset(table)
    samples = list(ds)
    assert list(ds.read_stats()["modes"].values()) == ["direct"]
    for s in samples:
        (y0, y1), (x0, x1) = s["position"].tolist()
        np.testing.assert_array_equal(s["images"], data[y0:y1, x0:x1])
    chunk = path / "c" / "1" / "0"
    raw = bytearray(chunk.read_bytes())
    # without blosc these are pixel bytes, which would still "decode"
    raw[20:28] = bytes(255 - b for b in raw[20:28])
    chunk.write_bytes(bytes(raw))
    with pytest.raises(CorruptChunkError, match=r"(?s)chunk \(1, 0\) of images of image 0.*crc32c"):
        list(PatchDataset(table))


# -- remote ------------------------------------------------------------------------------

#: short timeouts so a silent endpoint fails within seconds
_FAST = {"connect_timeout": 1, "read_timeout": 1, "retries": {"max_attempts": 1}}


@pytest.fixture(scope="module")
def s3_table(s3_server):
    from zarrdask import build_table

    spec = {"source": s3_server.url("slide_v3.zarr"), "storage_options": s3_server.storage_options}
    return build_table([spec], patch_size=128)


def _options(s3_server, endpoint: str) -> dict:
    return {**s3_server.storage_options, "endpoint_url": endpoint, "config_kwargs": _FAST}


@pytest.mark.parametrize("fault", ["silent", "garbage", "reset"])
def test_remote_faults_mid_epoch_raise_remote_access_error(s3_server, s3_table, fault_proxy, fault):
    ds = PatchDataset(s3_table, storage_options=_options(s3_server, fault_proxy.endpoint_url),
                      read_threads=2)
    it = iter(ds)
    assert next(it)["images"].shape == (3, 128, 128)
    fault_proxy.mode = fault
    with pytest.raises(RemoteAccessError) as info:
        for _ in it:
            pass
    message = str(info.value)
    assert f"127.0.0.1:{fault_proxy.port}" in message
    assert "slide_v3.zarr" in message and "chunk" in message
    assert s3_server.secret not in message


def test_silent_endpoint_at_open_fails_fast_with_the_endpoint(s3_server, s3_table, fault_proxy):
    fault_proxy.mode = "silent"
    ds = PatchDataset(s3_table, storage_options=_options(s3_server, fault_proxy.endpoint_url))
    with pytest.raises(RemoteAccessError, match=rf"(?s)slide_v3\.zarr.*127\.0\.0\.1:{fault_proxy.port}"):
        next(iter(ds))


def test_remote_store_deleted_mid_epoch_raises_source_not_found(s3_server, remote_files):
    import boto3

    from zarrdask import build_table

    client = boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1",
                          aws_access_key_id=s3_server.key, aws_secret_access_key=s3_server.secret)
    prefix = "doomed/slide.zarr"
    root = remote_files.root / "slide_plain"
    keys = []
    for path in root.rglob("*"):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(root).as_posix()}"
            client.upload_file(str(path), s3_server.bucket, key)
            keys.append(key)
    spec = {"source": s3_server.url(prefix), "storage_options": s3_server.storage_options}
    table = build_table([spec], patch_size=64)
    ds = PatchDataset(table, storage_options=_options(s3_server, s3_server.endpoint_url),
                      read_threads=0)
    it = iter(ds)
    next(it)
    client.delete_objects(Bucket=s3_server.bucket,
                          Delete={"Objects": [{"Key": k} for k in keys]})
    client.close()
    with pytest.raises(SourceNotFoundError, match=r"(?s)doomed/slide\.zarr.*zarr\.json"):
        for _ in it:
            pass
