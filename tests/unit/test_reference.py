"""docs/reference/config.md is the schema's own account of itself: regenerated, it is the
committed page, so a key, a help line or an option that the page does not list fails here."""

import runpy

from helpers import ROOT


def test_the_reference_is_the_schema():
    reference = runpy.run_path(str(ROOT / "scripts" / "reference.py"))
    page = (ROOT / "docs" / "reference" / "config.md").read_text()
    assert reference["render"]() == page, "docs/reference/config.md is out of date: python scripts/reference.py"


def test_every_option_and_key_is_listed():
    from optlab.config.schema import GROUP_KEYS, option_groups, options, top_level_keys

    page = (ROOT / "docs" / "reference" / "config.md").read_text()
    for group in option_groups():
        for option in options(group):
            assert f"`{group}={option}`" in page
    for path in [*top_level_keys(), *GROUP_KEYS]:
        assert f"| `{path}` |" in page
    assert "`data=mnist5k`" in page and "`experiment=critical_batch`" in page and "`experiment=annealing_mnist5k`" in page
