"""Shared pytest fixtures: paths of the built binaries (make test builds them first)."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _built(rel):
    path = ROOT / rel
    if not path.exists():
        subprocess.run(["make", "-C", str(ROOT), rel], check=True, stdout=subprocess.DEVNULL)
    return path


@pytest.fixture(scope="session")
def zerostart():
    """The release zerostart binary (CUDA build when the toolkit is present; no GPU here)."""
    return _built("build/rel/zerostart")


@pytest.fixture(scope="session")
def zerostart_asan():
    return _built("build/asan/zerostart")


@pytest.fixture(scope="session")
def load_driver():
    return _built("build/asan/tests/test_load_driver")


@pytest.fixture(scope="session")
def root():
    return ROOT


os.environ.setdefault("ASAN_OPTIONS", "detect_leaks=1")
