"""PatchDataset options are checked at construction: a wrong type or value is
a DatasetError naming the option and what to pass, never silently coerced
(``shuffle="no"`` is not ``True``) nor a raw error from deep inside."""

from __future__ import annotations

import numpy as np
import pytest

from zarrdask.dataset import PatchDataset
from zarrdask.errors import DatasetError


@pytest.fixture(scope="module")
def table(slide3, make_table):
    return make_table([slide3], patch=256)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("shuffle", "no", r"shuffle='no' must be True or False"),
    ("shuffle", 1, r"shuffle=1 must be True or False"),
    ("even_shards", "false", r"even_shards='false' must be True or False"),
    ("return_tuple", None, r"return_tuple=None must be True or False"),
    ("replacement", "yes", r"replacement='yes' must be True or False"),
    ("seed", "abc", r"seed='abc' must be an integer"),
    ("seed", 1.5, r"seed=1.5 must be an integer"),
    ("seed", True, r"seed=True must be an integer"),
    ("chunk_buffer", "16", r"chunk_buffer='16' must be an integer"),
    ("chunk_buffer", 0, r"chunk_buffer=0 must be at least 1"),
    ("cache_bytes", -1, r"cache_bytes=-1 must be at least 0"),
    ("read_threads", 2.0, r"read_threads=2.0 must be an integer"),
    ("num_samples", "10", r"num_samples='10' must be an integer"),
    ("padding_mode", 0, r"padding_mode=0 is unknown; use one of constant"),
    ("storage_options", "anon", r"storage_options='anon' must be a mapping"),
    ("output_dims", "yxc", r"output_dims='yxc' must be a mapping"),
    ("transforms", 42, r"transforms=42 must be a callable.*mapping.*pairs"),
    ("transforms", [("images",)], r"transforms holds \('images',\).*pair"),
    ("modalities", 3, r"modalities=3 must be a modality name or a sequence"),
    ("sources", 5, r"sources=5 must be a sequence"),
    ("weights", object(), r"weights must be a column name or an array"),
])
def test_bad_options_raise_dataset_error_naming_the_option(table, option, value, message):
    with pytest.raises(DatasetError, match=message):
        PatchDataset(table, **{option: value})


def test_numpy_scalars_are_accepted_where_python_ones_are(table):
    ds = PatchDataset(table, shuffle=np.bool_(True), seed=np.int64(3), chunk_buffer=np.int32(2))
    assert ds.shuffle is True and ds.seed == 3 and ds.chunk_buffer == 2


def test_load_state_dict_checks_the_state_before_using_it(table):
    ds = PatchDataset(table, shuffle=True, seed=1)
    with pytest.raises(DatasetError, match=r"lacks \['epoch', 'yielded', .*state_dict\(\)"):
        ds.load_state_dict({})
    with pytest.raises(DatasetError, match=r"mapping returned by PatchDataset.state_dict\(\), not a list"):
        ds.load_state_dict([])
    state = ds.state_dict()
    with pytest.raises(DatasetError, match=r"state_dict\['yielded'\]='3' must be an integer"):
        ds.load_state_dict({**state, "yielded": "3"})
    with pytest.raises(DatasetError, match=r"epoch=-1 must be at least 0"):
        ds.set_epoch(-1)
    ds.load_state_dict(state)  # the real thing still works
    assert len(list(ds)) == len(table)
