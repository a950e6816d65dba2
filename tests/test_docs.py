"""The documentation keeps up with the code (as datasette's docs tests do)."""

from __future__ import annotations

import re

import pytest

from router.core import hookspecs
from tests.conftest import ROOT

PLUGINS_MD = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
HEADINGS = set(re.findall(r"^### (fenliu_\w+\(.*\))$", PLUGINS_MD, re.M))


@pytest.mark.parametrize("name", hookspecs.hook_names())
def test_every_hook_is_documented_with_its_signature(name):
    assert hookspecs.spec_signature(name) in HEADINGS


@pytest.mark.parametrize("name", hookspecs.hook_names())
def test_every_hook_has_a_docstring(name):
    doc = getattr(hookspecs, name).__doc__ or ""
    assert len(doc.strip()) > 80, f"{name} needs a docstring saying when it is called and what it returns"


def test_no_documented_hook_is_missing_from_the_specs():
    documented = {h.split("(")[0] for h in HEADINGS}
    assert documented == set(hookspecs.hook_names())


def test_readme_starts_with_make_run_and_make_test():
    head = (ROOT / "README.md").read_text(encoding="utf-8")[:1500]
    assert "make run" in head and "make test" in head


#: Placeholders and generated output the guides name on purpose.
NOT_FILES = ("bench/results", "config/faq/x.toml", "policies/NAME.toml", "tests/data/adapter_")
PATH_IN_DOCS = re.compile(r"(?<![\w./\[-])((?:router|plugins|policies|adapters|bench|config|tests|examples)/[\w./-]*\w)")
#: Markdown link targets, relative to the guide: ``](../router/core/dispatch.py#L10)``.
LINK_IN_DOCS = re.compile(r"\]\(((?!https?:|mailto:|#)[^)\s#]+)")


@pytest.mark.parametrize("doc", [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))], ids=lambda p: p.name)
def test_every_path_the_guides_name_exists(doc):
    """The README's layout table and docs/ follow the tree: a moved or split module fails here."""
    text = doc.read_text(encoding="utf-8")
    missing = {p for p in PATH_IN_DOCS.findall(text)
               if not p.startswith(NOT_FILES) and not (ROOT / p).exists() and not (doc.parent / p).exists()}
    missing |= {p for p in LINK_IN_DOCS.findall(text) if not (doc.parent / p).exists()}
    assert not missing, f"{doc.relative_to(ROOT)} names paths that do not exist: {sorted(missing)}"
