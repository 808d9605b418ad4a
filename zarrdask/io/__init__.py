"""Readers: any image source as a lazy, labelled ``xarray.DataArray``."""

from .api import discover, open_image, open_pyramid
from .location import connect_s3
from .recipe import ArrayRecipe, LazyArray, open_facts, recipe_of
from .zarr_metadata import isconsolidated

__all__ = [
    "open_image",
    "open_pyramid",
    "discover",
    "ArrayRecipe",
    "LazyArray",
    "recipe_of",
    "open_facts",
    "connect_s3",
    "isconsolidated",
]
