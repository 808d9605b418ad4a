"""mkdocs hook: Sphinx cross-reference roles in docstrings shown as code.

The docstrings use numpydoc's Sphinx roles (``:func:`zarrdask.build_table```,
``:class:`~zarrdask.dataset.PatchDataset```), which mkdocstrings does not
resolve: they reach the page as ``:func:<code>...</code>``. This hook keeps
the code and drops the role, and a leading ``~`` shortens the name to its
last component, as Sphinx shows it.
"""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const|ref|term):"
                   r"<code>(~?)([^<]*)</code>")


def _shown(match: re.Match[str]) -> str:
    name = match.group(2)
    if match.group(1):
        name = name.rsplit(".", 1)[-1]
    return f"<code>{name}</code>"


def on_page_content(html: str, **kwargs: object) -> str:
    """Replace the roles left in a page's HTML by their code."""
    return _ROLE.sub(_shown, html)
