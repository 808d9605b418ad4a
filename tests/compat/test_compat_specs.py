"""Dataset specs (dict subclasses) and ToDtype."""

from __future__ import annotations

import numpy as np
import pytest

import zarrdask.compat as zds
from zarrdask.errors import DatasetError

KEYS = {"modality", "filenames", "source_axes", "axes", "data_group", "roi", "image_loader_func",
        "zarr_store", "transforms", "add_to_output"}


def _double(x):
    return x * 2


def test_specs_are_dicts_of_add_modality_arguments():
    spec = zds.DatasetSpecs("images", ["a.zarr"], "CYX", data_group="0", transform=_double)
    assert isinstance(spec, dict) and set(spec) == KEYS
    assert spec["transforms"] == [(("images",), [_double])]
    images = zds.ImagesDatasetSpecs("a.zarr", "TCZYX", roi="(0,0,0,0,0):(1,-1,1,-1,-1)")
    assert images["modality"] == "images" and images["add_to_output"] is True
    assert images["roi"] == "(0,0,0,0,0):(1,-1,1,-1,-1)" and images["transforms"] == []
    masks = zds.MasksDatasetSpecs([np.ones((2, 2), bool)], "YX")
    assert masks["modality"] == "masks" and masks["add_to_output"] is False


def test_labels_spec_registers_its_transform_then_the_input_label_transform():
    def both(image, labels):
        return image, labels

    spec = zds.LabelsDatasetSpecs([np.zeros((2, 2))], "YX", transform=_double,
                                  input_label_transform=[both, both], modality="seg")
    assert spec["modality"] == "seg" and spec["add_to_output"] is True
    assert spec["transforms"] == [(("seg",), [_double]), (("images", "seg"), [both, both])]


def test_a_transform_must_be_callable():
    with pytest.raises(DatasetError, match="not callable"):
        zds.ImagesDatasetSpecs("a.zarr", "YX", transform="flip")


def test_to_dtype_casts_and_prints():
    cast = zds.ToDtype(dtype=np.float16)
    source = np.arange(4, dtype=np.uint16)
    out = cast(source)
    assert out.dtype == np.float16 and np.array_equal(out, source)
    assert out is not source
    assert repr(cast) == "ToDtype(dtype=<class 'numpy.float16'>)"
    assert cast._dtype is np.float16
