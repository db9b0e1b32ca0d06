"""`make test` runs pytest-xdist with ``--dist loadgroup`` (tests/conftest.py): a module's
tests stay on one worker, so its module-scoped fixtures (a trained model, an emulator
run, the session's default run) are built once. With pytest 9 and pytest-xdist 3.8 the
grouping silently did nothing (xdist renames ``item._nodeid``, which pytest 9 no longer
reads): every test was its own unit and those fixtures were built on both workers."""
import pytest


def test_a_parallel_run_groups_this_module_on_one_worker(request):
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not a pytest-xdist worker of a --dist loadgroup run")
    assert request.node.nodeid.endswith("@tests/test_suite_grouping.py"), request.node.nodeid
