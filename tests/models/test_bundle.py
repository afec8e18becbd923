"""bundle.py helpers that the tools share."""

from __future__ import annotations

import platform

import pytest

from fermodels.bundle import keep_freed_memory, pick_device


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_is_accepted_by_glibc():
    assert keep_freed_memory() is True


def test_pick_device_refuses_cuda_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert pick_device("auto") == "cpu"
    with pytest.raises(ValueError, match="no CUDA device"):
        pick_device("cuda")
