"""Import the HippoSNN module on the stand-in and run its own light self-test (HippoSNNTest).

Used by CI under Python 3.9 with numpy 1.26 and no nibabel, the situation of Slicer 5.8's Python:
``python tests/slicer_standin/light_selftest.py [--block nibabel,torch]``. ``--block`` makes imports of
those packages fail even where they are installed. Exits non-zero on any failure and prints what the
import pulled in.
"""

from __future__ import annotations

import argparse
import importlib.abc
import sys
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class _Blocker(importlib.abc.MetaPathFinder):
    def __init__(self, names) -> None:
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named '{fullname}' (blocked: not in Slicer 5.8's Python)")
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--block", default="", help="comma-separated packages whose import must fail")
    args = parser.parse_args(argv)
    blocked = [name for name in args.block.split(",") if name]
    if blocked:
        sys.meta_path.insert(0, _Blocker(blocked))
    sys.path.insert(0, str(ROOT))
    from tests.slicer_standin import standin

    module = standin.loadModule()
    heavy = sorted({"torch", "nibabel", "SimpleITK", "PyTorchUtils"} & set(sys.modules))
    print(f"Python {sys.version.split()[0]}; numpy {__import__('numpy').__version__}; imported with the module: "
          f"{heavy or 'none of torch, nibabel, SimpleITK, PyTorchUtils'}")
    if heavy:
        print("FAILED: the module imported heavy packages at load time")
        return 1
    suite = unittest.TestSuite([module.HippoSNNTest("runTest")])
    result = unittest.TextTestRunner(verbosity=1).run(suite)
    heavy = sorted({"torch", "nibabel"} & set(sys.modules))
    if heavy:
        print(f"FAILED: the light self-test imported {heavy}")
        return 1
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
