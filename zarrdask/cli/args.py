"""Argument parsing pieces shared by the subcommands: the parser class (one-line
errors, defaults and examples in ``--help``) and the ``argparse`` types that
check each value before any work starts."""

from __future__ import annotations

import argparse
import json
import textwrap
from typing import NoReturn

__all__ = ["UsageError", "Parser", "HelpFormatter", "storage_options", "int_list", "size_list", "level",
           "at_least", "positive_float", "min_area", "spatial_axes"]


class UsageError(Exception):
    """Options that parse one by one but not together (reported like a parse error)."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description and the examples (epilog) as written and appends
    ``(default: ...)`` to every option whose default is a value (not None or
    off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or default is None or default is False
                or default == argparse.SUPPRESS
                or not action.option_strings or action.required):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``zarrdask grid: error: ...``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        if kwargs.get("description"):  # wrapped here: the formatter keeps text as given
            kwargs["description"] = textwrap.fill(kwargs["description"], 79)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def storage_options(text: str | dict | None) -> dict | None:
    """``--storage-options``: a JSON object."""
    if text is None or isinstance(text, dict):
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not valid JSON ({exc.msg} at character {exc.pos}); pass an object "
            "such as '{\"anon\": true}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"{text!r} is a JSON {type(value).__name__}; pass an object such as "
            "'{\"anon\": true}'")
    return value


def int_list(minimum: int):
    """An ``argparse`` type: one int or a list ``256,256`` / ``256x256``, each >= minimum."""

    def parse(text: str) -> int | list[int]:
        parts = [v.strip() for v in str(text).replace("x", ",").split(",")]
        try:
            values = [int(v) for v in parts]
        except ValueError:
            values = []
        if not values or any(v < minimum for v in values):
            kind = "a positive integer" if minimum > 0 else "a non-negative integer"
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {kind} or a list of them like 256,256")
        return values[0] if len(values) == 1 else values

    return parse


def size_list(minimum: int):
    """Like :func:`int_list`, but each entry may also be a length in
    micrometres (``128um``, ``64um,64um``, ``0.128mm``)."""
    ints = int_list(minimum)

    def parse(text: str) -> int | str | list[int | str]:
        from ..grid.physical import parse_length

        parts = [v.strip() for v in str(text).split(",")]
        if not any(parse_length(p) is not None for p in parts):
            return ints(text)
        values: list[int | str] = []
        for part in parts:
            length = parse_length(part)
            if length is not None and (length > 0 or minimum == 0):
                values.append(part)
                continue
            try:
                number = int(part)
            except ValueError:
                number = minimum - 1
            if number < minimum:
                raise argparse.ArgumentTypeError(
                    f"{text!r}: {part!r} is not a length such as 128um or an integer >= "
                    f"{minimum}")
            values.append(number)
        return values[0] if len(values) == 1 else values

    return parse


def level(text: str) -> int | str:
    """A level index (``1``) or a magnification (``20x``)."""
    from ..io.level_select import parse_magnification

    if parse_magnification(text) is not None:
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a level index (0 is the finest) or a magnification such as 20x")
    return value


def at_least(minimum: int):
    """An ``argparse`` type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {minimum}")
        return value

    return parse


def _float_or_nan(text: str) -> float:
    """``float(text)``, NaN when it is not a number (NaN fails every check)."""
    try:
        return float(text)
    except ValueError:
        return float("nan")


def positive_float(text: str) -> float:
    """An ``argparse`` type: a number > 0."""
    value = _float_or_nan(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def min_area(text: str) -> float:
    """``--min-area``: a fraction (< 1) or a pixel count (>= 1)."""
    value = _float_or_nan(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a fraction (< 1) or a pixel count (>= 1)")
    return int(value) if value >= 1 and value.is_integer() else value


def spatial_axes(text: str) -> str:
    """``--spatial-axes``: distinct axis letters such as ``YX`` or ``ZYX``."""
    value = str(text).strip().upper()
    if not value.isalpha() or len(set(value)) != len(value):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a string of distinct axis letters such as YX or ZYX")
    return value
