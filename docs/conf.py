"""Sphinx configuration of the einfra-spawner documentation (MyST Markdown, pydata-sphinx-theme).

Build with warnings as errors: ``sphinx-build -W --keep-going -b html docs docs/_build/html``.
The configuration reference comes from the traits' help text (autodoc-traits) and the profile
file reference from the profile models (``_ext/profile_reference.py``): neither is written by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

import einfra_spawner  # noqa: E402  (after the path change, for the local extension's sake)

project = "einfra-spawner"
author = "einfra-spawner contributors"
copyright = "einfra-spawner contributors"
release = einfra_spawner.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "autodoc_traits",
    "profile_reference",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist", "fieldlist"]
myst_heading_anchors = 3

# The traits' help text is reStructuredText with ``literals`` and :func: roles.
autodoc_member_order = "bysource"
autodoc_typehints = "none"

# No intersphinx: the build must not depend on the network.

html_theme = "pydata_sphinx_theme"
html_title = f"einfra-spawner {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_static_path: list[str] = []

#: Pages written separately, listed in the index's toctree and left out of it while they are absent.
OPTIONAL_PAGES = ("usage", "benchmarks")


def _skip_inherited_traits(
    app: object, what: str, name: str, obj: object, skip: bool, options: object
) -> bool:
    """Document only this project's traits: JupyterHub's own Spawner traits are JupyterHub's."""
    owner = getattr(obj, "this_class", None)
    if owner is not None and not owner.__module__.startswith("einfra_spawner"):
        return True
    return skip


def _drop_absent_pages(app: object, docname: str, source: list[str]) -> None:
    if docname != "index":
        return
    for page in OPTIONAL_PAGES:
        if not (DOCS / f"{page}.md").exists():
            source[0] = source[0].replace(f"\n{page}\n", "\n")


def setup(app: object) -> None:
    app.connect("autodoc-skip-member", _skip_inherited_traits)  # type: ignore[attr-defined]
    app.connect("source-read", _drop_absent_pages)  # type: ignore[attr-defined]
