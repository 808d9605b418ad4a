"""Cohort inputs on the loopback S3 server: glob patterns and prefixes
expanded with fsspec, a cohort built from them (issue 13, item 5)."""

from __future__ import annotations

import zarrdask as zd
from zarrdask.grid.inputs import expand_sources


def test_s3_globs_and_prefixes_expand_and_build(tmp_path, s3_server, remote_files):
    options = s3_server.storage_options
    found = expand_sources(s3_server.url("slide_v*.zarr"), storage_options=options)
    assert found == [s3_server.url("slide_v2.zarr"), s3_server.url("slide_v3.zarr")]
    listed = expand_sources(s3_server.url(""), storage_options=options)
    assert s3_server.url("image.tif") in listed and s3_server.url("slide_v3.zarr") in listed
    # a store given with a trailing slash is one image, not a folder
    assert expand_sources(s3_server.url("slide_v3.zarr/"), storage_options=options) == [
        s3_server.url("slide_v3.zarr")]
    out = tmp_path / "cohort.parquet"
    table = zd.build_cohort(s3_server.url("slide_v*.zarr"), out=out, patch_size=128,
                            storage_options=options)
    back = zd.read_table(out)
    local = [remote_files.local("slide_v2.zarr"), remote_files.local("slide_v3.zarr")]
    assert back.frame.equals(zd.build_table(local, patch_size=128).frame)
    assert [e["open"]["source"] for e in back.images] == found
    assert s3_server.secret not in (out / "current" / "_manifest.json").read_text()
    images = (out / "current" / "_images" / "images-000000.parquet").read_bytes()
    assert s3_server.secret.encode() not in images
    # unchanged objects: reused by their ETag
    again = zd.build_cohort(s3_server.url("slide_v*.zarr"), out=out, patch_size=128,
                            storage_options=options)
    assert again.manifest["meta"]["build"]["images_reused"] == 2
    assert again.hash == table.hash


def test_grid_cohort_takes_a_file_list_and_a_glob_of_s3_urls(tmp_path, s3_server, capsys):
    import json

    from zarrdask.cli import main

    (tmp_path / "list.txt").write_text(f"# one URL per line\n{s3_server.url('image.tif')}\n")
    out = tmp_path / "cohort.parquet"
    args = ["grid", "--cohort", "--files-from", str(tmp_path / "list.txt"),
            s3_server.url("slide_v*.zarr"), "--storage-options",
            json.dumps(s3_server.storage_options), "--patch-size", "64", "--workers", "1",
            "--out", str(out), "--quiet"]
    assert main(args) == 0
    table = zd.read_table(out)
    assert [e["open"]["source"] for e in table.images] == [
        s3_server.url("slide_v2.zarr"), s3_server.url("slide_v3.zarr"),
        s3_server.url("image.tif")]
    assert len(table) > 0 and "'images_opened': 3" in capsys.readouterr().out
    assert s3_server.secret not in (out / "current" / "_manifest.json").read_text()
    images = (out / "current" / "_images" / "images-000000.parquet").read_bytes()
    assert s3_server.secret.encode() not in images
