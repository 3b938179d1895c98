"""The suite records: every one loads and is complete; suites have a namespace of their own."""

import pytest

from attnbook.registry import add, method_info, suite_info, suites


def test_a_suite_may_share_a_name_with_a_method():
    from attnbook.registry import SUITES, Suite

    add(Suite("dense", lambda device, quick: [], "01", "a suite named like a method"))
    try:
        assert "dense" in SUITES and method_info("dense").name == "dense"
        with pytest.raises(ValueError, match="already registered"):
            add(Suite("dense", lambda device, quick: [], "01", "clash with the suite"))
    finally:
        SUITES.pop("dense")


@pytest.mark.parametrize("name", suites())
def test_every_suite_record_loads_and_is_complete(name):
    info = suite_info(name)
    assert callable(info.fn) and info.doc and info.chapter.isdigit() and len(info.chapter) == 2
    assert info.gpu_allowance_s > 0 and info.gpu_note
    assert info.cpu_threads is None or (isinstance(info.cpu_threads, int) and info.cpu_threads >= 1)
