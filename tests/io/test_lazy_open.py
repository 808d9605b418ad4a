"""Opening a huge image reads its metadata and nothing else.

The pyramids here are 3 x 65536 x 65536 (12 GiB of uint8 at level 0) but only
their metadata is written: zarr creates arrays without writing chunks. The
store is a real ``LocalStore`` that records every key it is asked for.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import dask.array as da
import pytest
import zarr
from zarr.storage import LocalStore

import zarrdask as zd
from zarrdask.io.recipe import open_facts

SIZE = 65536
CHUNK = 512
LEVELS = 4
#: Names of zarr metadata documents (v3 and v2, consolidated or not).
METADATA_KEYS = {"zarr.json", ".zattrs", ".zgroup", ".zarray", ".zmetadata"}


class CountingStore(LocalStore):
    """A ``LocalStore`` that records every read and listing it serves.

    Parameters
    ----------
    root : path
        Folder of the store.
    read_only : bool
        As ``LocalStore``.
    log : list, optional
        Where to append ``(operation, key, found)``; shared by the copies
        zarr makes with :meth:`with_read_only`.
    """

    def __init__(self, root: str | Path, *, read_only: bool = False,
                 log: list[tuple[str, str, bool]] | None = None) -> None:
        super().__init__(root, read_only=read_only)
        self.log: list[tuple[str, str, bool]] = [] if log is None else log

    def with_read_only(self, read_only: bool = False) -> CountingStore:
        return type(self)(self.root, read_only=read_only, log=self.log)

    async def get(self, key: str, prototype: Any = None, byte_range: Any = None) -> Any:
        value = await super().get(key, prototype, byte_range)
        self.log.append(("get", key, value is not None))
        return value

    async def get_partial_values(self, prototype: Any, key_ranges: Any) -> list:
        key_ranges = list(key_ranges)
        values = await super().get_partial_values(prototype, key_ranges)
        self.log.extend(("get", k, v is not None) for (k, _), v in zip(key_ranges, values,
                                                                        strict=True))
        return values

    async def exists(self, key: str) -> bool:
        found = await super().exists(key)
        self.log.append(("exists", key, found))
        return found

    async def list(self):
        self.log.append(("list", "", True))
        async for key in super().list():
            yield key

    async def list_prefix(self, prefix: str):
        self.log.append(("list", prefix, True))
        async for key in super().list_prefix(prefix):
            yield key

    async def list_dir(self, prefix: str):
        self.log.append(("list", prefix, True))
        async for key in super().list_dir(prefix):
            yield key

    @property
    def reads(self) -> list[str]:
        """Keys asked for by ``get`` (found or not), in order."""
        return [key for op, key, _ in self.log if op == "get"]

    @property
    def hits(self) -> list[str]:
        """Keys asked for by ``get`` that held a document."""
        return [key for op, key, found in self.log if op == "get" and found]


def write_empty_pyramid(path: Path, *, zarr_format: int, consolidated: bool = False,
                        levels: int = LEVELS) -> str:
    """Write the metadata of a ``levels``-level RGB OME-NGFF pyramid of
    ``SIZE``² pixels (0.5 on zarr v3, 0.4 on v2) and no chunk at all."""
    group = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    datasets = []
    for i in range(levels):
        n = SIZE >> i
        group.create_array(str(i), shape=(3, n, n), chunks=(3, CHUNK, CHUNK), dtype="uint8",
                           fill_value=0)
        datasets.append({"path": str(i), "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, 0.25 * 2**i, 0.25 * 2**i]}]})
    multiscale = {
        "name": "empty",
        "axes": [{"name": "c", "type": "channel"},
                 {"name": "y", "type": "space", "unit": "micrometer"},
                 {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": datasets,
    }
    if zarr_format == 3:
        group.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}
    else:
        group.attrs["multiscales"] = [{**multiscale, "version": "0.4"}]
    if consolidated:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # v3 consolidation is not in the spec yet
            zarr.consolidate_metadata(path)
    return str(path)


def _is_metadata_key(key: str) -> bool:
    return key.rsplit("/", 1)[-1] in METADATA_KEYS


def _per_level_docs(zarr_format: int) -> int:
    # v3: one zarr.json per array; v2: .zarray and .zattrs, plus the .zgroup
    # zarr probes to tell an array from a group.
    return 1 if zarr_format == 3 else 3


#: zarr-python probes these root documents at once when the format is not
#: given (zarr.json, .zgroup, .zattrs, .zmetadata).
ROOT_PROBES = 4


@pytest.fixture(params=[3, 2], ids=["v3", "v2"])
def zarr_format(request) -> int:
    return request.param


@pytest.fixture
def empty_pyramid(tmp_path, zarr_format) -> str:
    return write_empty_pyramid(tmp_path / "empty.zarr", zarr_format=zarr_format)


def test_the_pyramid_really_has_no_chunks(empty_pyramid):
    files = [p for p in Path(empty_pyramid).rglob("*") if p.is_file()]
    assert files and all(p.name in METADATA_KEYS for p in files)
    assert sum(p.stat().st_size for p in files) < 64 * 1024


def test_open_pyramid_reads_each_metadata_document_once(empty_pyramid, zarr_format):
    store = CountingStore(empty_pyramid, read_only=True)
    tree = zd.open_pyramid(store)

    assert tree.attrs["levels"] == [str(i) for i in range(LEVELS)]
    for i in range(LEVELS):
        assert tree[str(i)]["image"].shape == (3, SIZE >> i, SIZE >> i)
    reads = store.reads
    assert reads, "the store saw no read: the test is not looking at the right store"
    assert all(_is_metadata_key(k) for k in reads), f"non-metadata reads: {reads}"
    assert not [op for op, _, _ in store.log if op == "list"], "opening listed the store"
    repeated = {k: n for k, n in Counter(reads).items() if n > 1}
    assert not repeated, f"metadata read more than once: {repeated}"
    assert len(reads) <= ROOT_PROBES + _per_level_docs(zarr_format) * LEVELS
    # every level's own document was read (the levels are real, not guessed)
    level_docs = {k.split("/", 1)[0] for k in store.hits if "/" in k}
    assert level_docs == {str(i) for i in range(LEVELS)}


def test_open_image_reads_only_metadata_and_uses_storage_chunks(empty_pyramid, zarr_format):
    store = CountingStore(empty_pyramid, read_only=True)
    arr = zd.open_image(store)

    assert arr.shape == (3, SIZE, SIZE) and arr.dims == ("c", "y", "x")
    assert all(_is_metadata_key(k) for k in store.reads), store.reads
    assert len(store.reads) <= ROOT_PROBES + _per_level_docs(zarr_format) * LEVELS
    assert isinstance(arr.data, da.Array)
    n = SIZE // CHUNK
    assert arr.data.chunks == ((3,), (CHUNK,) * n, (CHUNK,) * n)
    assert arr.data.npartitions == n * n
    assert open_facts(arr)["storage_chunks"] == {"c": 3, "y": CHUNK, "x": CHUNK}


def test_every_pyramid_level_is_chunked_like_its_storage(empty_pyramid):
    tree = zd.open_pyramid(CountingStore(empty_pyramid, read_only=True))
    for i in range(LEVELS):
        data = tree[str(i)]["image"].data
        raw = zarr.open_array(f"{empty_pyramid}/{i}", mode="r")
        assert data.chunksize == raw.chunks == (3, CHUNK, CHUNK)
        assert data.numblocks == tuple(-(-s // c) for s, c in zip(raw.shape, raw.chunks,
                                                                  strict=True))


@pytest.mark.parametrize("zarr_format", [3, 2], ids=["v3", "v2"])
def test_consolidated_metadata_is_read_in_one_round(tmp_path, zarr_format):
    path = write_empty_pyramid(tmp_path / "cons.zarr", zarr_format=zarr_format,
                               consolidated=True)
    plain = CountingStore(write_empty_pyramid(tmp_path / "plain.zarr", zarr_format=zarr_format),
                          read_only=True)
    zd.open_pyramid(plain)

    store = CountingStore(path, read_only=True)
    tree = zd.open_pyramid(store)
    assert len(tree.attrs["levels"]) == LEVELS
    reads = store.reads
    # one round of root documents, nothing per level
    assert all(_is_metadata_key(k) and "/" not in k for k in reads), reads
    assert len(reads) <= ROOT_PROBES
    expected = {3: {"zarr.json"}, 2: {".zgroup", ".zattrs", ".zmetadata"}}[zarr_format]
    assert set(store.hits) == expected
    assert len(reads) < len(plain.reads)

    store.log.clear()
    arr = zd.open_image(store)
    assert arr.shape == (3, SIZE, SIZE)
    assert all("/" not in k for k in store.reads) and len(store.reads) <= ROOT_PROBES


def test_consolidated_reads_do_not_grow_with_the_number_of_levels(tmp_path):
    counts = []
    for levels in (2, 6):
        path = write_empty_pyramid(tmp_path / f"l{levels}.zarr", zarr_format=3,
                                   consolidated=True, levels=levels)
        store = CountingStore(path, read_only=True)
        assert len(zd.open_pyramid(store).attrs["levels"]) == levels
        counts.append(len(store.reads))
    assert counts[0] == counts[1]


def _chunk_key(zarr_format: int, level: int, index: tuple[int, ...]) -> str:
    if zarr_format == 3:
        return f"{level}/c/" + "/".join(map(str, index))
    return f"{level}/" + ".".join(map(str, index))


def test_reading_a_region_asks_only_for_the_chunks_it_overlaps(empty_pyramid, zarr_format):
    store = CountingStore(empty_pyramid, read_only=True)
    arr = zd.open_image(store)
    store.log.clear()

    # y 600..700 lies in chunk row 1; x 2000..2100 spans chunk columns 3 and 4
    values = arr[:, 600:700, 2000:2100].values
    assert values.shape == (3, 100, 100)
    assert not values.any()  # unwritten chunks read as the fill value
    expected = {_chunk_key(zarr_format, 0, (0, 1, 3)), _chunk_key(zarr_format, 0, (0, 1, 4))}
    assert set(store.reads) == expected, store.reads
    assert len(store.reads) == 2  # no chunk twice, no metadata again

