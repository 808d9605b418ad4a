"""Tissue masks: the right pixels, the right level, the right coordinates."""

from __future__ import annotations

import inspect
import logging
import pickle

import dask
import numpy as np
import pytest
import xarray as xr
import zarr
import zarr.storage
from scipy import ndimage

from zarrdask.datasets import synthetic_slide, tissue_field, write_synthetic_slide
from zarrdask.errors import MaskError
from zarrdask.io import open_image, open_pyramid
from zarrdask.masks import (
    MaskGenerator,
    WSITissueMaskGenerator,
    mask_is_empty,
    mask_origin,
    mask_scale_factors,
    mask_scale_of,
    tissue_mask,
    tissue_threshold,
)
from zarrdask.masks.tissue import fused_layers

SIZE, CHUNK, LEVELS, SEED, COVERAGE = 2048, 256, 4, 7, 0.35


def truth_at(shape: tuple[int, int], *, size: int = SIZE, seed: int = SEED) -> np.ndarray:
    """Ground-truth tissue at the centres of a ``shape`` grid over the slide,
    interpolated from the low-resolution field the way the slide was drawn."""
    field = tissue_field((max(16, size // 64),) * 2, seed=seed, coverage=COVERAGE)
    factor = size / field.shape[0]
    axes = [((np.arange(n) + 0.5) * size / n) / factor - 0.5 for n in shape]
    grid = np.meshgrid(*axes, indexing="ij")
    return ndimage.map_coordinates(field, grid, order=1, mode="nearest") > 1 - COVERAGE


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("masks") / "s.zarr"
    return write_synthetic_slide(path, size=SIZE, chunk=CHUNK, levels=LEVELS, seed=SEED)


class KeyLog(logging.Handler):
    """Collects the store keys a LoggingStore reads."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def chunk_reads(self) -> list[str]:
        keys = []
        for msg in self.messages:
            if "Calling" in msg and ".get(" in msg:
                key = msg.split(".get(", 1)[1].rsplit(")", 1)[0]
                if "/c/" in key:
                    keys.append(key)
        return keys


@pytest.fixture
def logged_store():
    """Open a path through a LoggingStore whose log lands in a KeyLog."""
    attached = []

    def make(path: str) -> tuple[zarr.storage.LoggingStore, KeyLog]:
        log = KeyLog()
        store = zarr.storage.LoggingStore(zarr.storage.LocalStore(path, read_only=True),
                                          log_level="INFO", log_handler=log)
        if log not in store.logger.handlers:  # not added when the root logger has handlers
            store.logger.addHandler(log)
        attached.append((store.logger, log))
        return store, log

    yield make
    for logger, log in attached:
        logger.removeHandler(log)


# -- what is computed --------------------------------------------------------------

def test_mask_is_true_on_tissue(slide):
    mask = tissue_mask(slide)
    assert mask.dims == ("y", "x")
    assert mask.shape == (SIZE // 16, SIZE // 16)
    assert mask.dtype == bool
    values = mask.values
    truth = truth_at(values.shape)
    agreement = (values == truth).mean()
    assert agreement > 0.9, f"only {agreement:.1%} of mask pixels agree with the ground truth"
    # True on tissue, not on the background (zarrdataset 0.2.2 returned the background)
    assert values[truth].mean() > 0.9
    assert values[~truth].mean() < 0.1


def test_threshold_is_per_image(slide):
    bright = open_image(slide)
    dark = (bright.astype(np.float32) * 0.6).astype(np.uint8)  # a darker slide
    m_bright, m_dark = tissue_mask(bright), tissue_mask(dark)
    t_bright, t_dark = tissue_threshold(m_bright), tissue_threshold(m_dark)
    # Otsu lands between tissue and background of each slide: scaled with it
    assert t_dark == pytest.approx(0.6 * t_bright, rel=0.05)
    assert t_dark < t_bright - 30
    truth = truth_at(m_dark.shape)
    for m in (m_bright, m_dark):
        assert (m.values == truth).mean() > 0.9
    # the first image's threshold would call the whole dark slide tissue
    reused = tissue_mask(dark, thresh=t_bright)
    assert reused.attrs["threshold"] == t_bright
    assert reused.values.mean() > 0.95


def test_threshold_is_lazy_and_shares_the_graph(slide):
    mask = tissue_mask(slide)
    assert isinstance(mask.data, dask.array.Array)
    lazy = tissue_threshold(mask, lazy=True)
    assert "threshold" not in mask.attrs  # attrs hold plain values only
    assert isinstance(lazy, dask.array.Array) and lazy.shape == ()
    values, threshold = dask.compute(mask, lazy)
    assert 100 < float(threshold) < 240
    grey_tissue = float(threshold)
    assert grey_tissue == pytest.approx(tissue_threshold(mask))
    assert values.values.any()


def test_given_threshold_in_intensity_units(slide):
    none = tissue_mask(slide, thresh=0.0)  # nothing is darker than 0
    assert none.attrs["threshold"] == 0.0
    assert mask_is_empty(none)
    everything = tissue_mask(slide, thresh=256.0)
    assert bool(everything.all())


def test_morphology_removes_specks_and_fills_holes():
    image = np.full((3, 512, 512), 240, dtype=np.uint8)
    image[:, 64:448, 64:448] = 120            # a tissue square ...
    image[:, 240:256, 240:256] = 240          # ... with a 1x1 mask-pixel hole
    image[:, 16:32, 480:496] = 120            # and a 1-pixel speck far away
    arr = open_image(image, axes="CYX")
    mask = tissue_mask(arr, min_size=16, area_threshold=128).values
    assert mask.shape == (32, 32)
    assert mask[15, 15], "the small hole is filled"
    assert not mask[1, 30], "the small speck is removed"
    assert mask[4:28, 4:28].all() and not mask[:4].any()
    raw = tissue_mask(arr, min_size=0, area_threshold=0).values
    assert not raw[15, 15] and raw[1, 30]


def test_constant_image_gives_an_empty_mask():
    blank = open_image(np.full((3, 256, 256), 250, dtype=np.uint8), axes="CYX")
    mask = tissue_mask(blank)
    assert mask_is_empty(mask)
    assert tissue_threshold(mask) == pytest.approx(250.0)


def test_three_d_image_keeps_z():
    image = np.full((4, 256, 256), 230, dtype=np.uint8)
    image[:, 64:192, 64:192] = 90
    arr = open_image(image, axes="ZYX")
    mask = tissue_mask(arr)
    assert mask.dims == ("z", "y", "x") and mask.shape == (4, 16, 16)
    assert mask_scale_of(mask) == {"z": 1.0, "y": 1 / 16, "x": 1 / 16}
    assert mask.values[:, 4:12, 4:12].all() and not mask.values[:, :4].any()


def test_bad_mask_scale_names_the_fix(slide):
    with pytest.raises(MaskError, match="mask_scale.*> 0"):
        tissue_mask(slide, mask_scale=0)
    with pytest.raises(MaskError, match="spatial dims"):
        tissue_mask(slide, mask_scale={"t": 0.5})


# -- the level read ------------------------------------------------------------------

def test_coarse_level_is_read_not_level_zero(slide, logged_store):
    store, log = logged_store(slide)
    tree = open_pyramid(store)
    mask = tissue_mask(tree, mask_scale=1 / 16)
    assert mask.attrs["level"] == 3  # factor 8 <= 16 < the next (none)
    log.messages.clear()
    mask.compute()
    reads = log.chunk_reads()
    assert reads, "the mask read no chunk at all"
    assert all(key.startswith("3/") for key in reads), reads
    assert len(reads) == 1  # level 3 is one 256x256 chunk


def test_image_dataarray_reads_its_pyramid(slide, logged_store):
    store, log = logged_store(slide)
    image = open_image(store)  # level 0
    assert image.attrs["level"] == 0
    mask = tissue_mask(image, mask_scale=1 / 4)
    assert mask.attrs["level"] == 2 and mask.shape == (512, 512)
    log.messages.clear()
    mask.compute()
    reads = log.chunk_reads()
    assert reads and all(key.startswith("2/") for key in reads), reads


def test_graph_references_only_the_chosen_level(slide):
    tree = open_pyramid(slide)
    levels = [tree[name]["image"] for name in tree.attrs["levels"]]
    for scale, chosen in ((1 / 16, 3), (1 / 8, 3), (1 / 7.3, 2), (1 / 3, 1), (1.0, 0)):
        mask = tissue_mask(tree, mask_scale=scale)
        layers = fused_layers(mask.data)  # also inside the per-block fused tasks
        used = [i for i, lv in enumerate(levels) if lv.data.name in layers]
        assert used == [chosen], f"mask_scale={scale}: read levels {used}, expected {chosen}"
        assert mask.shape == (round(SIZE * scale),) * 2


def test_non_integer_factor_is_resampled_exactly(slide):
    mask = tissue_mask(slide, mask_scale=1 / 7.3)
    n = round(SIZE / 7.3)
    assert mask.shape == (n, n)
    assert mask_scale_of(mask) == {"y": n / SIZE, "x": n / SIZE}
    truth = truth_at(mask.shape)
    assert (mask.values == truth).mean() > 0.9


# -- coordinates ---------------------------------------------------------------------

def test_coordinates_are_the_image_physical_positions(slide):
    image = open_image(slide)
    mask = tissue_mask(slide)
    # mask pixel i starts where image pixel 16 i starts
    np.testing.assert_allclose(mask.x.values, image.x.values[::16])
    np.testing.assert_allclose(mask.y.values, image.y.values[::16])
    assert {d: mask[d].attrs["scale"] for d in ("y", "x")} == {"y": 8.0, "x": 8.0}  # 0.5 um * 16
    assert {d: mask[d].attrs["units"] for d in ("y", "x")} == {"y": "micrometer", "x": "micrometer"}
    assert mask.attrs["source"] == slide
    assert mask_scale_factors(mask, image) == {"y": 1 / 16, "x": 1 / 16}
    assert mask_origin(mask, image) == {"y": 0.0, "x": 0.0}
    # the same physical point in both
    i = 37
    assert float(mask.x[i]) == float(image.x[16 * i])


def test_roi_image_gives_a_mask_of_the_region(slide):
    roi = open_image(slide, roi="(0,512,256):(3,1024,1024)")
    full = open_image(slide)
    mask = tissue_mask(roi)
    assert mask.shape == (64, 64) and mask.attrs["level"] == 3
    np.testing.assert_allclose(mask.x.values, roi.x.values[::16])
    assert mask_origin(mask, full) == {"y": 512.0, "x": 256.0}
    whole = tissue_mask(full).values
    assert (mask.values == whole[32:96, 16:80]).mean() > 0.97


def test_mask_pickles_and_computes(slide):
    mask = tissue_mask(slide, mask_scale=1 / 7.3)
    again = pickle.loads(pickle.dumps(mask))
    xr.testing.assert_equal(again.compute(), mask.compute())


# -- zarrdataset-compatible generator ------------------------------------------------

def test_generator_signature_matches_zarrdataset():
    sig = inspect.signature(WSITissueMaskGenerator)
    assert [(p.name, p.default) for p in sig.parameters.values()] == [
        ("mask_scale", 1 / 16), ("min_size", 16), ("area_threshold", 128), ("thresh", None),
        ("axes", "YX")]
    assert list(inspect.signature(MaskGenerator).parameters) == ["axes"]
    gen = WSITissueMaskGenerator(mask_scale=1 / 8, min_size=4, area_threshold=32, thresh=None)
    assert isinstance(gen, MaskGenerator)
    assert (gen.axes, gen._mask_scale, gen._min_size, gen._area_threshold_2, gen._thresh) == (
        "YX", 1 / 8, 4, 32, None)
    with pytest.raises(NotImplementedError):
        MaskGenerator("YX")(np.zeros((4, 4)))


def test_generator_is_true_on_tissue_with_a_threshold_per_call():
    size = 1024
    rgb = np.moveaxis(synthetic_slide(size, chunk=256, seed=3).compute(), 0, -1)  # YXC
    gen = WSITissueMaskGenerator()
    mask = gen(rgb)
    assert mask.dtype == bool and mask.shape == (64, 64)
    truth = truth_at(mask.shape, size=size, seed=3)
    assert (mask == truth).mean() > 0.9
    assert mask[truth].mean() > 0.9
    first = gen.threshold_
    dark = (rgb * 0.5).astype(np.uint8)
    mask_dark = gen(dark)
    assert gen._thresh is None and gen.threshold_ == pytest.approx(first * 0.5, rel=0.05)
    assert (mask_dark == truth).mean() > 0.9
    # grey input, odd shapes: round(shape * mask_scale), YX, or ZYX with a leading axis
    grey = rgb[:1000, :777].mean(axis=-1)
    assert gen(grey).shape == (round(1000 / 16), round(777 / 16))
    assert WSITissueMaskGenerator(axes="ZYX")(grey).shape == (1, 62, 49)


# -- the resampling core -------------------------------------------------------------

def test_area_resampling_is_the_block_mean_and_conserves_the_mean():
    from zarrdask.masks.tissue import _resample_dask, resample_area

    rng = np.random.default_rng(0)
    image = rng.random((96, 160))
    blocks = image.reshape(12, 8, 20, 8).mean(axis=(1, 3))
    np.testing.assert_allclose(resample_area(image, (12, 20)), blocks)
    # non-integer factor: every output pixel is an overlap-weighted mean ...
    odd = resample_area(image, (13, 21))
    assert odd.shape == (13, 21)
    assert odd.mean() == pytest.approx(image.mean(), rel=1e-12)
    # ... and the dask graph gives the same numbers, block by block
    lazy = _resample_dask(dask.array.from_array(image, chunks=32), [(0, 96), (0, 160)], (13, 21))
    np.testing.assert_allclose(lazy.compute(), odd)
    tall = rng.random((5000, 6))  # several output blocks along y
    lazy = _resample_dask(dask.array.from_array(tall, chunks=700), [(0, 5000), (0, 6)], (13, 4))
    assert len(lazy.chunks[0]) > 1
    np.testing.assert_allclose(lazy.compute(), resample_area(tall, (13, 4)))
    # a constant image stays constant, whatever the factor
    np.testing.assert_allclose(resample_area(np.full((10, 7), 3.0), (4, 9)), 3.0)


def test_grey_reduction_runs_as_one_task_per_block(tmp_path, monkeypatch):
    """A single-level slide (64 storage chunks) at 1/16: the grey level and
    its reduction are one fused task (not one per chunk); smaller blocks
    split it into chunk-aligned tasks with the same mask and threshold."""
    from zarrdask.masks import tissue as tissue_module

    path = write_synthetic_slide(tmp_path / "one.zarr", size=1024, chunk=128, levels=1, seed=2)

    def grey_tasks(mask):
        layers = mask.data.__dask_graph__().layers
        names = [name for name in layers if str(name).startswith("tissue-grey-")]
        assert len(names) == 1
        return len(layers[names[0]])

    whole = tissue_mask(path, mask_scale=1 / 16)
    assert whole.attrs["level"] == 0 and grey_tasks(whole) == 1
    # about 4 storage chunks of input per task: 16 tasks
    monkeypatch.setattr(tissue_module, "_TASK_PIXELS", 4 * 128 * 128)
    split = tissue_mask(path, mask_scale=1 / 16)
    assert grey_tasks(split) == 16
    np.testing.assert_array_equal(split.values, whole.values)
    assert whole.values.any() and tissue_threshold(split) == tissue_threshold(whole)


def test_grey_level_matches_the_numpy_core():
    """The chunked luminance equals the float64 dot of the numpy core."""
    from zarrdask.masks.tissue import LUMINANCE, _grey_level

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    image = xr.DataArray(dask.array.from_array(pixels, chunks=(16, 16, 3)), dims=("y", "x", "c"))
    grey = _grey_level(image, "c", ["y", "x"]).values
    np.testing.assert_allclose(grey, pixels.astype(np.float64) @ LUMINANCE, rtol=0, atol=1e-12)
    # channels in separate chunks are merged first
    split = xr.DataArray(dask.array.from_array(pixels, chunks=(16, 16, 1)), dims=("y", "x", "c"))
    np.testing.assert_array_equal(_grey_level(split, "c", ["y", "x"]).values, grey)
