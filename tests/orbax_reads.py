"""The warning filter of tests that restore a damaged checkpoint on purpose.

A restore that fails on one damaged array abandons Orbax's other pending
reads; their coroutines, collected after Orbax's event loop has closed, are
reported by pytest as unraisable exceptions. Orbax's, not a fault of ours: the
tests check what the run does about the damage. Only those two messages are
filtered, and only during the test, so each such test ends with `gc.collect()`:
a read left uncollected would otherwise surface in whichever test runs the
collector next.
"""

import pytest

ABANDONED_ORBAX_READS = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. (None|<coroutine object _read_array_index_and_device_put)"
    ":pytest.PytestUnraisableExceptionWarning")
