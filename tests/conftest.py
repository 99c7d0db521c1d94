"""Test-wide isolation: reports, caches and checkpoints go to a temporary folder, and the hub is offline.

Set at import, before any test or notebook kernel starts, so nbval kernels inherit them and the
committed reports/ are never touched by a test run.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_SANDBOX = Path(tempfile.mkdtemp(prefix="labkit-tests-"))
os.environ["LABKIT_REPORTS"] = str(_SANDBOX / "reports")
os.environ["LABKIT_RUNS"] = str(_SANDBOX / "runs")
os.environ["LABKIT_CACHE"] = str(_SANDBOX / "cache")
os.environ["LABKIT_CHECKPOINTS"] = str(_SANDBOX / "checkpoints")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.pop("LABKIT_WEIGHTS_DIR", None)
os.environ.pop("LABKIT_REPORT_DIR", None)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one pytest worker per core: each worker (and the notebook kernels it starts) computes on one thread,
    # since two workers of two torch threads each on two cores spin against each other
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SANDBOX, ignore_errors=True)


@pytest.fixture
def shared_data() -> Path:
    """The workplace's small real samples (../shared/data); tests that need them skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"shared sample data not found at {SHARED_DATA}: these tests read small public samples "
            "(rock micro-CT, a Sentinel-2 patch, a Sentinel-1 chip) from a shared/data/ folder beside the "
            "repository; put the project's shared/ folder there (each data folder's MANIFEST.md names the "
            "public repository, commit and licence it was copied from). Nothing else needs them."
        )
    return SHARED_DATA
