"""hipposnn.memory: the frugal allocator returns freed activations to the system.

Each check runs in a fresh interpreter: the setting is process-wide and must not leak into the other
tests. The pattern is the one of a BPTT step: large short-lived float blocks interleaved with smaller
long-lived ones (the saved 8-bit codes), then the large ones freed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from hipposnn import memory

PATTERN = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from hipposnn.memory import frugal_allocator

    def rss_mb():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * 4096 / 2**20

    applied = frugal_allocator() if sys.argv[1] == "frugal" else False
    base = rss_mb()
    kept, big = [], []
    for i in range(12):
        big.append(torch.ones(6 * 2**20))         # 24 MiB short-lived floats
        kept.append(torch.ones(2**18, dtype=torch.uint8))  # 256 KiB long-lived codes
        if i % 2:
            big.pop(0)                             # freed while later blocks live on
    big.clear()
    for i in range(12):                            # a second step of another size: no reuse possible
        big.append(torch.ones(7 * 2**20))
        kept.append(torch.ones(2**18, dtype=torch.uint8))
        if i % 2:
            big.pop(0)
    big.clear()
    active = os.environ.get("THP_MEM_ALLOC_ENABLE") == "1"
    print(json.dumps({"applied": applied, "active": active, "held_mb": rss_mb() - base}))
    """
)


#: the child processes start without the setting, whatever this process's environment holds
CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}


def _run(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PATTERN, mode], capture_output=True, text=True, check=True,
                         env=CLEAN_ENV)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(memory._glibc() is None, reason="the frugal allocator needs glibc (Linux)")
def test_frugal_allocator_returns_freed_blocks():
    frugal = _run("frugal")
    assert frugal["applied"] and frugal["active"]
    # only the 24 x 256 KiB long-lived blocks (6 MiB) remain; the 24-28 MiB floats went back
    assert frugal["held_mb"] < 16, frugal
    default = _run("default")
    assert not default["active"]
    # what the module is for: glibc's default heap keeps most of the freed floats (~99 MB here)
    assert default["held_mb"] > frugal["held_mb"] + 30, (default, frugal)


def test_frugal_allocator_is_idempotent_and_off_by_default():
    out = subprocess.run(
        [sys.executable, "-c", "from hipposnn import memory as m, training as t; import os; "
         "a = os.environ.get('THP_MEM_ALLOC_ENABLE') == '1'; b = m.frugal_allocator(); c = m.frugal_allocator(); "
         "print(a, b == c, t.TrainConfig().frugal_memory, os.environ.get('THP_MEM_ALLOC_ENABLE') == '1' or not b)"],
        capture_output=True, text=True, check=True, env=CLEAN_ENV)
    assert out.stdout.split() == ["False", "True", "False", "True"]


GRADIENTS = textwrap.dedent(
    """
    import hashlib, sys
    import torch
    import torch.nn.functional as F
    from hipposnn.memory import frugal_allocator
    from hipposnn.unet import SpikingUNet, UNetSpec

    if sys.argv[1] == "frugal":
        assert frugal_allocator()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = SpikingUNet(UNetSpec(in_channels=3, channels=(16, 32, 64)))
    for name in model.threshold_dict():
        model.set_threshold(name, 0.2)
    model.train()
    spikes = (torch.rand(8, 16, 3, 56, 48) < 0.3).float()  # layers of 1-11 MB: mapped when frugal
    target = (torch.rand(16, 1, 56, 48) < 0.3).float()
    F.binary_cross_entropy_with_logits(model.logits(model(spikes), 8), target).backward()
    digest = hashlib.sha256()
    for p in model.parameters():
        digest.update(p.grad.numpy().tobytes())
    print(digest.hexdigest())
    """
)


@pytest.mark.skipif(memory._glibc() is None, reason="the frugal allocator needs glibc (Linux)")
def test_frugal_allocator_trains_the_same_weights():
    """Where the memory comes from must not change a bit of the BPTT gradients (dropout seeded too)."""
    digests = []
    for mode in ("default", "frugal"):
        out = subprocess.run([sys.executable, "-c", GRADIENTS, mode], capture_output=True, text=True, check=True)
        digests.append(out.stdout.strip())
    assert len(digests[0]) == 64 and digests[0] == digests[1]
