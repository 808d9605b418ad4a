"""Validation of :class:`~zarrdask.dataset.PatchDataset` options: every
public option is checked for its type and range at construction, and a bad
value raises :class:`~zarrdask.errors.DatasetError` naming the option, the
value and what to pass (``shuffle="no"`` is not silently ``True``)."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import DatasetError
from .boxes import parse_output_dims

__all__ = [
    "check_flag",
    "check_int",
    "check_choice",
    "check_mapping",
    "check_names",
    "transform_items",
    "check_sampling",
    "check_output_dims",
    "check_state",
    "STATE_KEYS",
]

#: Keys a saved state must hold (see ``PatchDataset.state_dict``).
STATE_KEYS = ("epoch", "yielded", "seed", "shuffle", "total", "table_hash", "shard")


def check_flag(name: str, value: Any) -> bool:
    """``value`` when it is a bool (numpy bools too), else a DatasetError."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise DatasetError(f"{name}={value!r} must be True or False (a bool), not a "
                       f"{type(value).__name__}")


def check_int(name: str, value: Any, *, minimum: int | None = None, optional: bool = False
              ) -> int | None:
    """``value`` as an int when it is an integer (not a bool) of at least
    ``minimum``; None passes when ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise DatasetError(f"{name}={value!r} must be an integer, not a {type(value).__name__}"
                           + ("; pass an int or None" if optional else "; pass an int"))
    value = int(value)
    if minimum is not None and value < minimum:
        raise DatasetError(f"{name}={value} must be at least {minimum}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` when it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise DatasetError(f"{name}={value!r} is unknown; use one of {', '.join(choices)}")
    return value


def check_mapping(name: str, value: Any, what: str) -> dict | None:
    """A dict copy of a mapping option (None stays None)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise DatasetError(f"{name}={value!r} must be a mapping ({what}), not a "
                           f"{type(value).__name__}")
    return dict(value)


def check_names(name: str, value: Any, what: str, example: str) -> list[str]:
    """A list of distinct names from an option holding one name or a
    sequence of names (``what``: "modality", "column"...)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise DatasetError(f"{name}={value!r} must be a {what} name or a sequence of {what} "
                           f"names (e.g. {example})")
    names = list(value)
    if len(set(names)) != len(names):
        raise DatasetError(f"{name}={names} names a {what} twice; list each once")
    return names


def transform_items(transforms: Any) -> list[tuple[Any, Callable]]:
    """``(key, callable)`` pairs of the ``transforms`` option: a callable (for
    ``"images"``), a mapping or a sequence of pairs."""
    if transforms is None:
        return []
    if callable(transforms) and not isinstance(transforms, Mapping):
        return [("images", transforms)]
    if isinstance(transforms, Mapping):
        return list(transforms.items())
    if isinstance(transforms, Sequence) and not isinstance(transforms, str | bytes):
        items = []
        for item in transforms:
            if not isinstance(item, Sequence) or isinstance(item, str | bytes) or len(item) != 2:
                raise DatasetError(
                    f"transforms holds {item!r}; each entry must be a (modality or tuple of "
                    "modalities, callable) pair"
                )
            items.append((item[0], item[1]))
        return items
    raise DatasetError(
        f"transforms={transforms!r} must be a callable (applied to images), a mapping "
        "{modality: callable} or a sequence of (modality, callable) pairs"
    )


def check_sampling(frame: Any, weights: Any, replacement: bool, num_samples: int | None, *,
                   where: str) -> dict[str, Any] | None:
    """The sampling settings (None when every row is read once per epoch)."""
    n = len(frame)
    if weights is None and not replacement and num_samples is None:
        return None
    w = None
    if weights is not None:
        if isinstance(weights, str):
            if weights not in frame.columns:
                raise DatasetError(
                    f"weights={weights!r} is not a column of {where} (columns: "
                    f"{list(frame.columns)}); pass a column name or an array"
                )
            w = frame[weights].to_numpy(dtype=np.float64)
        else:
            try:
                w = np.asarray(weights, dtype=np.float64).ravel()
            except (TypeError, ValueError) as exc:
                raise DatasetError(
                    f"weights must be a column name or an array of numbers, not {weights!r}"
                ) from exc
        if len(w) != n:
            raise DatasetError(
                f"weights has {len(w)} values but the table has {n} rows; pass one per row"
            )
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise DatasetError(
                "weights must be finite, non-negative and not all zero; check the column/array"
            )
    total = n if num_samples is None else int(num_samples)
    if not replacement:
        nonzero = n if w is None else int(np.count_nonzero(w))
        if total > nonzero:
            raise DatasetError(
                f"num_samples={total} exceeds the {nonzero} rows that can be drawn without "
                "replacement; pass replacement=True or a smaller num_samples"
            )
    return {"weights": w, "replacement": bool(replacement), "num_samples": total}


def check_output_dims(output_dims: Any, modalities: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``{modality: dims}`` of the ``output_dims`` option."""
    out = {}
    for name, spec in (check_mapping("output_dims", output_dims,
                                     '{modality: "cyx"}') or {}).items():
        if name not in modalities:
            raise DatasetError(
                f"output_dims names {name!r}, which is not among the modalities "
                f"{list(modalities)}; use one of those"
            )
        if not isinstance(spec, str | Sequence):
            raise DatasetError(f"output_dims[{name!r}]={spec!r} must be a string of dim letters "
                               "(e.g. 'cyx') or a sequence of dim names")
        dims = parse_output_dims(spec)
        if len(set(dims)) != len(dims):
            raise DatasetError(f"output_dims[{name!r}]={spec!r} repeats a dim; name each once")
        out[name] = dims
    return out


def check_state(state_dict: Any) -> None:
    """Raise when ``state_dict`` is not a state saved by ``state_dict()``."""
    if not isinstance(state_dict, Mapping):
        raise DatasetError(
            f"load_state_dict needs the mapping returned by PatchDataset.state_dict(), not a "
            f"{type(state_dict).__name__}"
        )
    missing = [k for k in STATE_KEYS if k not in state_dict]
    if missing:
        raise DatasetError(
            f"cannot resume: the state lacks {missing}; pass the mapping returned by "
            "PatchDataset.state_dict() (or StatefulDataLoader.state_dict()) unchanged"
        )
    for key in ("epoch", "yielded"):
        check_int(f"state_dict[{key!r}]", state_dict[key], minimum=0)
