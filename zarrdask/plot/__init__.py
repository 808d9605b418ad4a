"""Pictures of every stage (matplotlib, loaded only when used).

* :func:`pixel_extent` — the ``imshow`` extent of a DataArray: pixel edges,
  ``coord[0]`` to ``coord[-1] + scale``;
* :func:`thumbnail` — a pyramid level small enough to look at;
* :func:`overlay` — image, mask contour, patch grid and prediction in the
  image's physical space;
* :func:`draw_annotations` — GeoJSON/shapely polygons, one colour per class;
* :func:`batch` — a batch of patches with their positions and labels;
* :func:`show` — what ``zarrdask show`` writes: one PNG per slide or a
  contact sheet;
* :func:`table_html` — the notebook view of a :class:`~zarrdask.PatchTable`.
"""

from .annotations import draw_annotations
from .batch import batch
from .html import table_html
from .overlay import draw_mask, draw_patches, overlay, pixel_extent, thumbnail
from .sheet import show

__all__ = ["pixel_extent", "thumbnail", "overlay", "draw_mask", "draw_patches", "draw_annotations", "batch", "show",
           "table_html"]
