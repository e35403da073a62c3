"""The allocator setting the entry points apply: glibc keeps large freed buffers (Linux CI runs glibc)."""

import platform

import numpy as np
import pytest

from aep_core.allocator import keep_freed_buffers


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keep_freed_buffers_applies_once_and_allocations_still_work():
    assert keep_freed_buffers() is True
    assert keep_freed_buffers() is True  # idempotent
    a = np.ones(8_000_000)  # 64 MB: above the default mmap threshold
    del a
    assert np.ones(8_000_000).sum() == 8_000_000
