"""Every public name of zarrdataset's API (``shared/seed/zarrdataset-api.rst``)
exists in zarrdask with the same parameter names, order, kinds and defaults,
and the documented attributes exist.

zarrdask may add *keyword-only* parameters with defaults after the seed's
(e.g. ``isconsolidated(..., *, storage_options=None)``): no zarrdataset call
can tell them apart. Anything else must match exactly."""

from __future__ import annotations

import ast
import inspect
import operator
import os
import re
from pathlib import Path

import numpy as np
import pytest

import zarrdask
import zarrdask.compat

#: ``shared/`` lies beside the repository (in a developer's checkout and in CI's
#: clone alike); ``ZARRDASK_SEED_API`` points elsewhere.
DEFAULT_SEED = (Path(__file__).resolve().parents[2].parent / "shared" / "seed"
                / "zarrdataset-api.rst")
SEED = Path(os.environ.get("ZARRDASK_SEED_API", DEFAULT_SEED))

PUBLIC = [
    "PatchSampler", "BlueNoisePatchSampler", "MaskGenerator", "WSITissueMaskGenerator",
    "ImageBase", "ImageLoader", "ImageCollection", "ToDtype", "DatasetSpecs",
    "ImagesDatasetSpecs", "LabelsDatasetSpecs", "MasksDatasetSpecs", "ZarrDataset",
    "image2array", "parse_rois", "parse_metadata", "map_axes_order", "select_axes", "connect_s3",
    "isconsolidated", "scale_coords", "translate2roi", "zarrdataset_worker_init_fn",
    "chained_zarrdataset_worker_init_fn",
]

_OPS = {ast.Div: operator.truediv, ast.Mult: operator.mul, ast.Add: operator.add,
        ast.Sub: operator.sub}


def _value(node: ast.AST):
    """Evaluate a default written in the seed (constants and arithmetic only)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_value(node.left), _value(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_value(node.operand)
    raise ValueError(f"unsupported default {ast.dump(node)}")


def _params(text: str) -> list[tuple[str, str, object]]:
    """``[(name, kind, default)]`` of a parameter list (``inspect._empty`` for none)."""
    func = ast.parse(f"def f({text}): pass").body[0]
    args = func.args
    out = []
    positional = args.posonlyargs + args.args
    defaults = [inspect.Parameter.empty] * (len(positional) - len(args.defaults)) + [
        _value(d) for d in args.defaults]
    for a, d in zip(positional, defaults, strict=True):
        out.append((a.arg, "POSITIONAL_OR_KEYWORD", d))
    if args.vararg:
        out.append((args.vararg.arg, "VAR_POSITIONAL", inspect.Parameter.empty))
    for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        out.append((a.arg, "KEYWORD_ONLY", inspect.Parameter.empty if d is None else _value(d)))
    if args.kwarg:
        out.append((args.kwarg.arg, "VAR_KEYWORD", inspect.Parameter.empty))
    return out


def _split(signature: str) -> tuple[str, str]:
    """``name(params) -> ret`` into name and the text between the parentheses."""
    open_at = signature.index("(")
    depth = 0
    for i in range(open_at, len(signature)):
        depth += {"(": 1, ")": -1}.get(signature[i], 0)
        if depth == 0:
            return signature[:open_at].strip(), signature[open_at + 1:i]
    raise ValueError(f"unbalanced signature {signature!r}")


def _seed_entries() -> list[tuple[str, str | None, str, str]]:
    """``(kind, class, name, params)`` for every class, function and method."""
    entries = []
    current = None
    for line in SEED.read_text().splitlines():
        m = re.match(r"^(\s*)\.\. py:(class|function|method|property|attribute):: (.+)$", line)
        if not m:
            continue
        indent, kind, rest = m.groups()
        if kind == "class":
            name, params = _split(rest)
            current = name
            entries.append(("class", None, name, params))
        elif kind == "function" and not indent:
            current = None
            name, params = _split(rest)
            entries.append(("function", None, name, params))
        elif kind == "method" and indent and current:
            name, params = _split(rest)
            entries.append(("method", current, name, params))
        elif kind in ("property", "attribute") and indent and current:
            entries.append((kind, current, rest.strip(), ""))
    return entries


def _lookup(name: str):
    """A public name: from the top-level package when exported there, else
    from :mod:`zarrdask.compat`."""
    if hasattr(zarrdask, name):
        return getattr(zarrdask, name)
    return getattr(zarrdask.compat, name)


def _ours(signature: inspect.Signature, drop_self: bool) -> list[tuple[str, str, object]]:
    params = list(signature.parameters.values())
    if drop_self:
        params = params[1:]
    return [(p.name, p.kind.name, p.default) for p in params]


ENTRIES = _seed_entries()


def test_the_seed_file_lists_every_public_name():
    names = {e[2] for e in ENTRIES if e[0] in ("class", "function")}
    assert set(PUBLIC) <= names
    assert sum(e[0] == "method" for e in ENTRIES) > 30


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e[0] in ("class", "function", "method")],
                         ids=lambda e: f"{e[1] + '.' if e[1] else ''}{e[2]}")
def test_signature_matches_the_seed(entry):
    kind, owner, name, params = entry
    expected = _params(params)
    if kind == "method":
        obj = inspect.getattr_static(_lookup(owner), name)
        if isinstance(obj, staticmethod | classmethod):
            obj = obj.__func__
        got = _ours(inspect.signature(obj), drop_self=True)
    else:
        got = _ours(inspect.signature(_lookup(name)), drop_self=False)
    extra = got[len(expected):]
    assert all(k == "KEYWORD_ONLY" and d is not inspect.Parameter.empty for _, k, d in extra), (
        f"{owner or ''}.{name}: only keyword-only parameters with defaults may follow the seed's")
    got = got[:len(expected)]
    assert [(n, k) for n, k, _ in got] == [(n, k) for n, k, _ in expected], (
        f"{owner or ''}.{name}: parameters differ from the seed")
    for (n, _, ours), (_, _, theirs) in zip(got, expected, strict=True):
        if theirs is inspect.Parameter.empty:
            assert ours is inspect.Parameter.empty, f"{name}({n}) must have no default"
        else:
            assert ours == theirs and type(ours) is type(theirs), (
                f"{name}({n}) default {ours!r} != seed {theirs!r}")


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e[0] == "property"],
                         ids=lambda e: f"{e[1]}.{e[2]}")
def test_documented_properties_are_properties(entry):
    _, owner, name, _ = entry
    assert isinstance(inspect.getattr_static(_lookup(owner), name), property)


def _instances(slide: str) -> dict[str, object]:
    C = zarrdask.compat
    collection = C.ImageCollection({"images": {"filename": slide, "data_group": "1",
                                               "source_axes": "CYX"}})
    dataset = C.ZarrDataset(C.ImagesDatasetSpecs(slide, "CYX", data_group="1"),
                            patch_sampler=C.PatchSampler(256))
    return {
        "PatchSampler": C.PatchSampler(64),
        "BlueNoisePatchSampler": C.BlueNoisePatchSampler(64),
        "MaskGenerator": C.MaskGenerator("YX"),
        "WSITissueMaskGenerator": C.WSITissueMaskGenerator(),
        "ImageBase": collection.collection["masks"],
        "ImageLoader": collection.collection["images"],
        "ImageCollection": collection,
        "ToDtype": C.ToDtype(np.float32),
        "ZarrDataset": dataset,
    }


def test_documented_attributes_exist_on_instances(slide):
    instances = _instances(slide)
    missing = []
    for kind, owner, name, _ in ENTRIES:
        if kind != "attribute" or owner not in instances:
            continue
        attr = name.split(":")[0].strip()
        if not hasattr(instances[owner], attr):
            missing.append(f"{owner}.{attr}")
    assert not missing


def test_compat_module_exports_the_zarrdataset_classes():
    exported = set(zarrdask.compat.__all__)
    for name in PUBLIC:
        assert hasattr(zarrdask.compat, name) or hasattr(zarrdask, name), name
    assert {"ZarrDataset", "PatchSampler", "image2array", "WSITissueMaskGenerator"} <= exported


def test_every_public_name_is_importable_from_zarrdask():
    if not hasattr(zarrdask, "ZarrDataset"):
        pytest.skip("zarrdask/__init__.py does not re-export zarrdask.compat yet (lead's step)")
    missing = [n for n in PUBLIC if not hasattr(zarrdask, n)]
    assert not missing
    assert zarrdask.ZarrDataset is zarrdask.compat.ZarrDataset
