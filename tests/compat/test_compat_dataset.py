"""ZarrDataset: output layout, alignment of modalities, transforms, sharding
across DataLoader workers and DDP ranks, remote sources."""

# zarrdataset code seeds numpy's global random state; these tests do too.
# ruff: noqa: NPY002

from __future__ import annotations

import json
import os
import pickle
import random
import socket
import threading
from collections import Counter
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
import zarr
from torch.utils.data import ChainDataset, DataLoader

import zarrdask.compat as zds
from zarrdask.errors import AxesError, DatasetError


def _images(slide, group="1", **kwargs):
    return zds.ImagesDatasetSpecs(slide, "CYX", data_group=group, **kwargs)


def test_one_output_is_a_bare_array_and_more_are_a_tuple_in_order(slide, level):
    sampler = zds.PatchSampler(256)
    bare = next(iter(zds.ZarrDataset(_images(slide), patch_sampler=sampler)))
    assert isinstance(bare, np.ndarray) and bare.shape == (3, 256, 256)
    wid, pos, image = next(iter(zds.ZarrDataset(_images(slide), patch_sampler=sampler,
                                                return_positions=True, return_worker_id=True)))
    assert wid.dtype == np.int64 and wid.shape == () and int(wid) == 0
    assert pos.dtype == np.int64 and pos.tolist() == [[0, -1], [0, 256], [0, 256]]
    np.testing.assert_array_equal(image, level(1)[:, :256, :256])


def test_without_a_sampler_each_image_comes_whole_in_its_axes(level):
    images = [level(1)[:, :300, :200], level(1)[:, :100, :50]]
    dataset = zds.ZarrDataset(return_positions=True)
    dataset.add_modality("image", images, "CYX", axes="YXC")
    out = list(dataset)
    assert [o[1].shape for o in out] == [(300, 200, 3), (100, 50, 3)]
    np.testing.assert_array_equal(out[1][1], np.moveaxis(images[1], 0, -1))
    assert out[0][0].tolist() == [[0, -1], [0, -1], [0, -1]]


def test_level_choice_and_tuple_of_filenames(slide, level):
    whole = zds.ZarrDataset()
    whole.add_modality("images", (slide, slide), "CYX", data_group="0")
    shapes = [s.shape for s in whole]
    assert shapes == [(3, 1024, 1024)] * 2
    labels = zds.LabelsDatasetSpecs((np.ones((8, 8), np.uint8),), "YX")
    pair = next(iter(zds.ZarrDataset((_images(slide), labels), patch_sampler=zds.PatchSampler(64))))
    assert isinstance(pair, tuple) and pair[1].shape == (1, 1)


def test_several_rois_per_file_are_several_images(slide, level):
    dataset = zds.ZarrDataset(patch_sampler=zds.PatchSampler(64), return_positions=True)
    dataset.add_modality("images", f"{slide};1;CYX;(0,0,0):(-1,64,128);(0,256,256):(-1,128,64)",
                         "CYX")
    out = list(dataset)
    assert len(out) == 2 + 2
    np.testing.assert_array_equal(out[3][1], level(1)[:, 320:384, 256:320])
    assert out[3][0].tolist() == [[0, -1], [64, 128], [0, 64]]


def test_labels_at_half_resolution_give_half_size_patches_of_the_same_region(slide, level,
                                                                            tmp_path):
    labels = (np.arange(512 * 512, dtype=np.int32).reshape(512, 512) // 7)
    stored = zarr.create_array(str(tmp_path / "labels.zarr"), shape=labels.shape,
                               chunks=(128, 128), dtype="int32", zarr_format=3)
    stored[:] = labels
    for source in (labels, str(tmp_path / "labels.zarr")):
        dataset = zds.ZarrDataset([_images(slide, "0"), zds.LabelsDatasetSpecs([source], "YX")],
                                  patch_sampler=zds.PatchSampler(256), return_positions=True)
        seen = 0
        for pos, image, label in dataset:
            (y0, y1), (x0, x1) = pos[1:].tolist()
            np.testing.assert_array_equal(image, level(0)[:, y0:y1, x0:x1])
            np.testing.assert_array_equal(label, labels[y0 // 2:y1 // 2, x0 // 2:x1 // 2])
            seen += 1
        assert seen == 16


def test_label_rois_span_the_reference_roi(slide, level):
    labels = np.arange(100 * 100, dtype=np.int32).reshape(100, 100)
    dataset = zds.ZarrDataset(
        [_images(slide, roi="(0,100,200):(-1,256,256)"),
         zds.LabelsDatasetSpecs([labels], "YX", roi="(10,20):(64,64)")],
        patch_sampler=zds.PatchSampler(64), return_positions=True)
    out = list(dataset)
    assert len(out) == 16
    pos, image, label = out[5]
    (y0, y1), (x0, x1) = pos[1:].tolist()
    np.testing.assert_array_equal(image, level(1)[:, 100 + y0:100 + y1, 200 + x0:200 + x1])
    np.testing.assert_array_equal(label, labels[10 + y0 // 4:10 + y1 // 4, 20 + x0 // 4:20 + x1 // 4])


def test_weak_labels_come_with_every_patch_in_their_dtype(slide):
    labels = [np.array([3], dtype=np.uint8), np.array([7], dtype=np.uint8)]
    dataset = zds.ZarrDataset([zds.ImagesDatasetSpecs([slide, slide], "CYX", data_group="1"),
                               zds.LabelsDatasetSpecs(labels, "L")],
                              patch_sampler=zds.PatchSampler(256))
    got = [(label.dtype, label.tolist()) for _, label in dataset]
    assert got == [(np.dtype(np.uint8), [3])] * 4 + [(np.dtype(np.uint8), [7])] * 4
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch[1].shape == (4, 1) and batch[1].dtype == torch.uint8


def test_mask_modality_in_the_output(slide):
    mask = np.zeros((8, 8), bool)
    mask[1, 2] = mask[5, 6] = True
    dataset = zds.ZarrDataset(
        [_images(slide), zds.LabelsDatasetSpecs([mask], "YX", axes="ZYX", modality="masks")],
        patch_sampler=zds.PatchSampler(64), return_positions=True)
    out = list(dataset)
    assert [tuple(p[1:, 0]) for p, _, _ in out] == [(64, 128), (320, 384)]
    assert all(m.shape == (1, 1, 1) and m.all() for _, _, m in out)


def test_a_generated_mask_in_the_output_is_generated_once_per_image(slide, level):
    class Coarse:
        axes = "YX"
        calls = 0

        def __call__(self, image):
            Coarse.calls += 1
            return image.mean(axis=-1)[::64, ::64] < 200

    dataset = zds.ZarrDataset(
        [_images([slide, slide]), zds.DatasetSpecs("masks", [slide, slide], "CYX", data_group="1",
                                                   axes="YXC", image_loader_func=Coarse())],
        patch_sampler=zds.PatchSampler(64))
    out = list(dataset)
    assert Coarse.calls == 2
    expected = np.moveaxis(level(1), 0, -1).mean(axis=-1)[::64, ::64] < 200
    assert len(out) == 2 * expected.sum() and all(m.shape == (1, 1) and m.all() for _, m in out)


def test_incomplete_patches_come_padded_to_the_full_size(level):
    image = level(1)[:, :150, :100]
    dataset = zds.ZarrDataset(
        [zds.ImagesDatasetSpecs([image], "CYX")],
        patch_sampler=zds.PatchSampler(64, allow_incomplete_patches=True), return_positions=True)
    out = list(dataset)
    assert len(out) == 3 * 2 and all(img.shape == (3, 64, 64) for _, img in out)
    pos, last = out[-1]
    assert pos[1:].tolist() == [[128, 192], [64, 128]]
    np.testing.assert_array_equal(last[:, :22, :36], image[:, 128:, 64:])
    assert not last[:, 22:].any() and not last[:, :, 36:].any()


def test_transforms_run_spec_first_then_add_transform_in_order(slide):
    calls = []

    def tag(name):
        def fn(*arrays):
            calls.append(name)
            return arrays if len(arrays) > 1 else arrays[0]
        return fn

    labels = np.zeros((512, 512), np.uint8)
    dataset = zds.ZarrDataset(
        [_images(slide, transform=tag("spec-images")),
         zds.LabelsDatasetSpecs([labels], "YX", transform=[tag("spec-labels"), tag("again")])],
        patch_sampler=zds.PatchSampler(512))
    dataset.add_transform("images", tag("added-1"))
    dataset.add_transform(("images", "labels"), lambda i, lab: (i.astype(np.float32), lab + 1))
    dataset.add_transform("labels", tag("added-2"))
    image, label = next(iter(dataset))
    assert calls == ["spec-images", "spec-labels", "again", "added-1", "added-2"]
    assert image.dtype == np.float32 and label.min() == 1
    assert "Transforms order" in repr(dataset) and "('images', 'labels')" in repr(dataset)


def test_shuffle_is_seeded_by_random_and_changes_with_the_epoch(slide):
    def make():
        return zds.ZarrDataset(_images(slide), patch_sampler=zds.PatchSampler(64), shuffle=True,
                               return_positions=True)

    def keys(ds):
        return [tuple(p[1:, 0].tolist()) for p, _ in ds]

    random.seed(5)
    a = make()
    random.seed(5)
    b = make()
    first, again = keys(a), keys(b)
    assert first == again and len(first) == 64
    assert sorted(first) != first
    second_epoch = keys(a)
    assert sorted(second_epoch) == sorted(first) and second_epoch != first
    b.set_epoch(0)
    assert keys(b) == first


def test_draw_same_chunk_reads_a_chunk_before_the_next(slide):
    dataset = zds.ZarrDataset(_images(slide), patch_sampler=zds.PatchSampler(64), shuffle=True,
                              draw_same_chunk=True, return_positions=True)
    chunks = [(int(p[1, 0]) // 256, int(p[2, 0]) // 256) for p, _ in dataset]
    runs = [c for i, c in enumerate(chunks) if i == 0 or c != chunks[i - 1]]
    assert len(runs) == len(set(chunks)) == 4


def test_errors_name_the_fix(slide):
    with pytest.raises(DatasetError, match="add_modality"):
        next(iter(zds.ZarrDataset()))
    with pytest.raises(DatasetError, match="'transform'"):
        zds.ZarrDataset([{"modality": "images", "filenames": slide, "source_axes": "CYX",
                          "transform": None}])
    dataset = zds.ZarrDataset(_images(slide), patch_sampler=zds.PatchSampler(64))
    dataset.add_transform(("images", "labels"), lambda a, b: (a, b))
    with pytest.raises(DatasetError, match="no modality \\['labels'\\]"):
        next(iter(dataset))
    with pytest.raises(AxesError, match="roi"):
        next(iter(zds.ZarrDataset(_images(slide, axes="YX"))))
    with pytest.raises(DatasetError, match="PatchSampler"):
        zds.ZarrDataset(_images(slide), patch_sampler="grid")


def test_getitem_reads_a_box_through_the_transforms(slide, level):
    dataset = zds.ZarrDataset(_images(slide, transform=zds.ToDtype(np.float32)),
                              patch_sampler=zds.PatchSampler(64))
    (patch,) = dataset[{"Y": slice(64, 128), "X": slice(0, 64)}]
    assert patch.dtype == np.float32
    np.testing.assert_array_equal(patch, level(1)[:, 64:128, :64])


def test_a_pickled_dataset_reads_the_same(slide):
    dataset = zds.ZarrDataset(_images(slide), patch_sampler=zds.PatchSampler(128),
                              return_positions=True)
    before = [p.tolist() for p, _ in dataset]
    copy = pickle.loads(pickle.dumps(dataset))
    assert [p.tolist() for p, _ in copy] == before


def test_workers_share_patches_exactly_once_without_an_init_fn(slide):
    dataset = zds.ZarrDataset(_images(slide), patch_sampler=zds.PatchSampler(64), shuffle=True,
                              return_positions=True, return_worker_id=True)
    seen, workers = [], Counter()
    for wid, pos, _ in DataLoader(dataset, batch_size=8, num_workers=2):
        seen += [tuple(p[1:, 0].tolist()) for p in pos]
        workers.update(wid.tolist())
    assert len(seen) == len(set(seen)) == 64
    assert workers == Counter({0: 32, 1: 32})


def test_whole_images_are_shared_between_workers(level):
    images = [level(1)[:, :40 + k, :30] for k in range(5)]
    dataset = zds.ZarrDataset([zds.ImagesDatasetSpecs(images, "CYX")], return_worker_id=True)
    got = [(int(w), img.shape[1]) for w, img in DataLoader(dataset, batch_size=None,
                                                           num_workers=2)]
    assert sorted(h for _, h in got) == [40, 41, 42, 43, 44]
    assert {w for w, _ in got} == {0, 1}


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # noqa: D102 - keep the test output clean
        pass


def test_http_sources_stream_like_local_ones(slide, level):
    root = os.path.dirname(slide)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{os.path.basename(slide)}"
        dataset = zds.ZarrDataset(zds.ImagesDatasetSpecs(url, "CYX", data_group="1"),
                                  patch_sampler=zds.PatchSampler(256), return_positions=True)
        for pos, image in dataset:
            (y0, y1), (x0, x1) = pos[1:].tolist()
            np.testing.assert_array_equal(image, level(1)[:, y0:y1, x0:x1])
    finally:
        server.shutdown()


def _ddp_rank(rank: int, world: int, port: int, slide: str, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        random.seed(rank)  # different per rank: the split must not depend on it
        np.random.seed(rank)
        plain = zds.ZarrDataset(_images(slide), patch_sampler=zds.BlueNoisePatchSampler(48),
                                shuffle=True, return_positions=True)
        plain._initialize()  # the workers inherit the table through fork
        table = sorted(map(list, plain._toplefts[0].tolist()))
        keys = []
        for pos, _ in DataLoader(plain, batch_size=4, num_workers=2, multiprocessing_context="fork",
                                 worker_init_fn=zds.zarrdataset_worker_init_fn):
            keys += [p[1:, 0].tolist() for p in pos]
        chain = ChainDataset([zds.ZarrDataset(_images(slide, roi=f"(0,{k * 128},0):(-1,128,-1)"),
                                              patch_sampler=zds.PatchSampler(64), shuffle=True,
                                              return_positions=True) for k in range(3)])
        chained = []
        for pos, image in DataLoader(chain, batch_size=4, num_workers=2,
                                     multiprocessing_context="fork",
                                     worker_init_fn=zds.chained_zarrdataset_worker_init_fn):
            chained += [p[1:, 0].tolist() + [int(i.sum())] for p, i in zip(pos, image, strict=True)]
        with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
            json.dump({"keys": keys, "chained": chained, "table": table}, fh)
    finally:
        dist.destroy_process_group()


def test_two_ddp_ranks_read_disjoint_shares(slide, tmp_path):
    import torch.multiprocessing as tmp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tmp.spawn(_ddp_rank, args=(2, port, slide, str(tmp_path)), nprocs=2, join=True)
    results = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    assert results[0]["table"] == results[1]["table"]  # same blue noise on both ranks
    keys = [tuple(k) for r in results for k in r["keys"]]
    assert len(keys) == len(set(keys)) > 20
    assert sorted(keys) == [tuple(k) for k in results[0]["table"]]
    assert abs(len(results[0]["keys"]) - len(results[1]["keys"])) <= 1
    chained = [tuple(k) for r in results for k in r["chained"]]
    assert len(chained) == len(set(chained)) == 3 * 2 * 8


def test_grid_order_and_positions_are_those_of_zarrdataset_0_2_2(slide):
    # recorded with zarrdataset 0.2.2 on the same image (level "1", 512², chunks 256²)
    dataset = zds.ZarrDataset(_images(slide), patch_sampler=zds.PatchSampler(dict(Y=128, X=256)),
                              return_positions=True)
    out = list(dataset)
    assert [p[1:, 0].tolist() for p, _ in out] == [
        [0, 0], [128, 0], [0, 256], [128, 256], [256, 0], [384, 0], [256, 256], [384, 256]]
    assert out[0][0].tolist() == [[0, -1], [0, 128], [0, 256]]
    assert out[0][1].shape == (3, 128, 256) and out[0][1].dtype == np.uint8


def test_label_boxes_start_at_the_pixel_holding_the_patch_start(slide):
    labels = np.arange(512 * 512, dtype=np.int32).reshape(512, 512)
    np.random.seed(4)
    dataset = zds.ZarrDataset([_images(slide, "0"), zds.LabelsDatasetSpecs([labels], "YX")],
                              patch_sampler=zds.BlueNoisePatchSampler(96), return_positions=True)
    odd = 0
    for pos, _, label in dataset:
        y, x = pos[1:, 0].tolist()
        odd += (y % 2) or (x % 2)
        np.testing.assert_array_equal(label, labels[y // 2:y // 2 + 48, x // 2:x // 2 + 48])
    assert odd > 5
