"""One comparison of grid records for the executor and resume tests: equal in everything but timings."""

import numpy as np

TIMING = {"seconds", "task_seconds", "train_seconds", "cpu_seconds", "images_per_s"}


def assert_same_records(a, b, where=""):
    """Records (dicts, lists, arrays, numbers) equal exactly, NaN equal to NaN, timing keys left out."""
    if isinstance(a, dict):
        assert set(a) - TIMING == set(b) - TIMING, where
        for k in set(a) - TIMING:
            assert_same_records(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_records(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), where
    else:
        assert a == b, where
