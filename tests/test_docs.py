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
