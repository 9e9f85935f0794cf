"""Builds the pt package's C extension over libpt.

libpt.a (built by `make` at the top of the tree) is linked in, so the
installed package needs no LD_LIBRARY_PATH. PT_ROOT names the top of the
source tree (default: ../.., relative to this file; set it when building
from a copy) and PT_BUILD the build folder (default: $PT_ROOT/build).
"""
import os

from setuptools import Extension, setup

here = os.path.dirname(os.path.abspath(__file__))
root = os.environ.get("PT_ROOT", os.path.normpath(os.path.join(here, "..", "..")))
if not os.path.exists(os.path.join(root, "client", "pt.h")):
    raise SystemExit("pt: %s not found: set PT_ROOT to the top of the pt source tree"
                     % os.path.join(root, "client", "pt.h"))
build = os.environ.get("PT_BUILD", os.path.join(root, "build"))
libpt = os.path.join(build, "lib", "libpt.a")
if not os.path.exists(libpt):
    raise SystemExit("pt: %s not found: run `make` at the top of the tree first "
                     "(or set PT_BUILD to the build folder)" % libpt)

setup(
    ext_modules=[
        Extension(
            "pt._pt",
            sources=["pt/_pt.c"],
            include_dirs=[os.path.join(root, "client"), root],
            extra_objects=[libpt],
            libraries=["isal", "protobuf-c", "rt", "m"],
            extra_compile_args=["-std=c11", "-Wall", "-Wextra"],
        )
    ],
)
