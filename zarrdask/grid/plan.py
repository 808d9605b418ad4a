"""The plan of a :func:`zarrdask.build_table` build (on the client): the
inputs expanded and opened, each image's grid, the table-level parameters,
the image, mask and label entries and the inputs hash; no pixel is read.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import xarray as xr

from .._version import __version__
from ..errors import GridParameterError, MaskError, ZarrdaskError
from ..io.recipe import open_facts, recipe_of
from ..masks.class_coverage import table_class_map
from ..table import absolute_location, source_entry
from .geometry import GridSpec
from .image_task import GridWarning, image_spec
from .inputs import expand_sources
from .options import GridOptions
from .physical import check_mask_mpp, check_same_pixels, is_physical, jsonable
from .sources import _stat_stamp, digest, fingerprint, item_name, open_item, per_image

__all__ = ["BuildPlan", "plan_build"]


@dataclass
class BuildPlan:
    """What :func:`plan_build` found, for the graph and the table.

    Attributes
    ----------
    opened : list of (index, item, image)
        The images that opened, with their input position and item.
    skipped : list of dict
        The images that did not (``on_error="skip"``).
    mask_items, label_items : list
        Per input position, the mask (``"tissue"``, a user mask or None)
        and the labels.
    specs : list of GridSpec
        Per opened image, its grid in its pixels.
    params : dict
        The table-level parameters (grid, sampler, seed, tissue options...).
    entries, label_entries, mask_desc : list
        Per opened image, its metadata entry, labels entry and mask
        description.
    table_hash : str
        The inputs hash (parameters, images' fingerprints, masks, labels).
    label_classes : dict or None
        The table's class map.
    """

    opened: list[tuple[int, Any, xr.DataArray]]
    skipped: list[dict[str, str]]
    mask_items: list[Any]
    label_items: list[Any]
    specs: list[GridSpec]
    params: dict[str, Any]
    entries: list[dict[str, Any]] = field(default_factory=list)
    label_entries: list[Any] = field(default_factory=list)
    mask_desc: list[Any] = field(default_factory=list)
    table_hash: str = ""
    label_classes: Any = None

    @property
    def grid(self) -> GridSpec:
        """The grid every image shares."""
        return self.specs[0]


def plan_build(images: Any, opts: GridOptions, *, masks: Any = None, labels: Any = None,
               on_error: str = "raise") -> BuildPlan:
    """Expand and open the inputs, check their grids agree and collect the
    table's entries and inputs hash (see :func:`zarrdask.build_table` for
    the arguments).

    Raises
    ------
    GridParameterError
        No image, none that opens, or images that do not share one grid.
    ZarrdaskError
        An image that does not open, with ``on_error="raise"``.
    """
    items = [_absolute_item(item) for item in expand_sources(images)]
    if not items:
        raise GridParameterError("images is empty; pass at least one image source")
    mask_items = [m if isinstance(m, str) and m == "tissue" else _absolute_item(m)
                  for m in per_image(masks, len(items), "masks")]
    label_items = [_absolute_item(m) for m in per_image(labels, len(items), "labels")]

    opened: list[tuple[int, Any, xr.DataArray]] = []
    skipped: list[dict[str, str]] = []
    for index, item in enumerate(items):
        try:
            opened.append((index, item, open_item(item, mpp=opts.mpp)))
        except ZarrdaskError as exc:
            if on_error == "raise":
                raise type(exc)(f"image {index} ({item_name(item)}) of {len(items)}: {exc}") from exc
            skipped.append({"index": index, "source": item_name(item), "error": str(exc)})
            warnings.warn(f"skipping image {index} ({item_name(item)}): {exc}", GridWarning,
                          stacklevel=3)
    if not opened:
        raise GridParameterError(f"none of the {len(items)} image(s) could be opened: {skipped}")

    physical = is_physical(opts.patch_size, opts.stride, opts.pad)
    specs = [image_spec(image, opts, index=index, item=item) for index, item, image in opened]
    if len({s.dims for s in specs}) > 1:
        raise GridParameterError(
            "the images do not share the same spatial dims "
            f"({sorted({s.dims for s in specs})}); build one table per kind of image"
        )
    if physical:
        check_same_pixels(specs, opened)
    plan = BuildPlan(opened=opened, skipped=skipped, mask_items=mask_items,
                     label_items=label_items, specs=specs,
                     params=_params(opts, specs[0], mask_items, physical))
    _entries(plan)
    return plan


def _params(opts: GridOptions, grid: GridSpec, mask_items: list[Any], physical: bool
            ) -> dict[str, Any]:
    """The table-level parameters recorded in the metadata and hashed."""
    params = {
        "grid": grid.to_dict(), "sampler": "blue-noise" if opts.blue_noise else "grid",
        "seed": opts.seed, "allow_overlap": bool(opts.allow_overlap),
        "tissue_options": _tissue_params(opts.tissue_options) if "tissue" in [
            m for m in mask_items if isinstance(m, str)] else {},
    }
    if opts.mask_mpp is not None:
        params["mask_mpp"] = check_mask_mpp(opts.mask_mpp, opts.tissue_options)
    if physical or opts.mpp is not None:
        params["physical"] = {"patch_size": jsonable(opts.patch_size),
                              "stride": jsonable(opts.stride), "pad": jsonable(opts.pad),
                              "mpp": opts.mpp}
    return params


def _entries(plan: BuildPlan) -> None:
    """Fill in the plan's image, label and mask entries, inputs hash and
    class map (no pixel is read)."""
    prints = []
    for image_id, (index, item, image) in enumerate(plan.opened):
        entry = source_entry(image, image_id=image_id)
        entry["index"] = index
        entry["mpp"] = open_facts(image).get("mpp")
        plan.entries.append(entry)
        prints.append(fingerprint(image))
        plan.mask_desc.append(_describe(plan.mask_items[index]))
        plan.label_entries.append(_label_entry(plan.label_items[index], image, index=index,
                                               image_name=item_name(item)))
    plan.table_hash = digest({"params": plan.params, "images": prints, "masks": [
        _mask_token(m) for m in (plan.mask_items[i] for i, _, _ in plan.opened)],
        "labels": plan.label_entries, "version": __version__})
    plan.label_classes = table_class_map(plan.label_entries)  # one per table, checked early


def _absolute_item(item: Any) -> Any:
    """An image/mask/label item whose local path is absolute, so that dask
    workers and later readers in another working directory find it."""
    if isinstance(item, str | os.PathLike):
        return absolute_location(item)
    if isinstance(item, Mapping):
        out = dict(item)
        for key in ("source", "filename"):
            if isinstance(out.get(key), str | os.PathLike):
                out[key] = absolute_location(out[key])
        return out
    return item


def _tissue_params(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Tissue-mask keywords with :func:`zarrdask.tissue_mask`'s defaults
    filled in, so that spelling out a default does not change the hash."""
    import inspect

    from ..masks import tissue_mask

    params = {name: p.default for name, p in inspect.signature(tissue_mask).parameters.items()
              if p.kind is p.KEYWORD_ONLY and name in ("mask_scale", "min_size",
                                                       "area_threshold", "thresh")}
    unknown = set(options or {}) - set(params) - {"channel_dim", "axes", "data_group",
                                                   "storage_options"}
    if unknown:
        raise GridParameterError(
            f"tissue_options has unknown keys {sorted(unknown)}; use {sorted(params)}")
    params.update({k: v for k, v in (options or {}).items() if k in params})
    return params


def _describe(mask_item: Any) -> Any:
    if mask_item is None:
        return None
    if isinstance(mask_item, str):
        return mask_item if mask_item == "tissue" else {"source": mask_item}
    if isinstance(mask_item, xr.DataArray):
        recipe = recipe_of(mask_item)
        return {"source": recipe.public() if recipe is not None else "<in-memory>"}
    if callable(mask_item):
        return {"callable": getattr(mask_item, "__qualname__", repr(mask_item))}
    return {"source": f"<in-memory {type(mask_item).__name__}>"}


def _mask_token(mask_item: Any) -> Any:
    from dask.base import tokenize

    if mask_item is None or isinstance(mask_item, str):
        from ..masks.annotations import is_annotations

        return [mask_item, _stat_stamp(mask_item)] if is_annotations(mask_item) else mask_item
    if isinstance(mask_item, xr.DataArray):
        return fingerprint(mask_item) if recipe_of(mask_item) else tokenize(mask_item.data)
    return tokenize(mask_item)


def _label_entry(label_item: Any, image: xr.DataArray, *, index: int = 0,
                 image_name: str = "") -> Any:
    """The table entry of an image's labels, placed in the image's space.

    Labels with coordinates in the image's units keep them; labels without
    (numpy/dask/zarr arrays, files without spatial metadata) span the image's
    whole stored array (:func:`zarrdask.masks.placement.stored_placement`,
    the rule masks follow). The entry's ``scale``/``origin`` (and
    ``scale0``/``origin0``, mapped the same way) are in the image's physical
    space, so :class:`zarrdask.PatchDataset` reads the label box under each
    patch.
    """
    if label_item is None:
        return None
    if isinstance(label_item, Mapping) and "weak" in label_item:
        return {"weak": label_item["weak"]}
    from ..masks.annotations import annotation_entry
    from ..masks.placement import stored_placement

    labels = open_item(label_item, like=image)
    entry = {**source_entry(labels), **annotation_entry(labels)}
    try:
        placement = stored_placement(labels, image, what="labels", source=item_name(label_item))
    except MaskError as exc:
        raise MaskError(f"labels of image {index} ({image_name}): {exc}") from exc
    for d, (origin, size) in placement.items():
        # the affine map from the labels' own space to the image's, applied to
        # the read level and to level 0 alike
        factor = size / float(entry["scale"][d])
        shift = origin - factor * float(entry["origin"][d])
        entry["scale"][d] = size
        entry["origin"][d] = origin
        entry["scale0"][d] = factor * float(entry["scale0"][d])
        entry["origin0"][d] = shift + factor * float(entry["origin0"][d])
    return entry
