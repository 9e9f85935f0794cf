"""Builds the pt package's C extension over libpt.

libpt.a (built by `make` at the top of the tree) is linked in, so the
installed package needs no LD_LIBRARY_PATH. PT_ROOT names the top of the
source tree (default: ../.., relative to this file; set it when building
from a copy) and PT_BUILD the build folder (default: $PT_ROOT/build).
PT_CUDA=1 links libpt's CUDA backend instead (libpt_cuda.a, built by
`make` where nvcc exists, and the CUDA runtime of CUDA_HOME, default
/usr/local/cuda, found through an rpath): CUDA tensors can then be
registered, and a client needs a GPU (PT_EGPU without one).
"""
import os

from setuptools import Extension, setup

here = os.path.dirname(os.path.abspath(__file__))
root = os.environ.get("PT_ROOT", os.path.normpath(os.path.join(here, "..", "..")))
if not os.path.exists(os.path.join(root, "client", "pt.h")):
    raise SystemExit("pt: %s not found: set PT_ROOT to the top of the pt source tree"
                     % os.path.join(root, "client", "pt.h"))
build = os.environ.get("PT_BUILD", os.path.join(root, "build"))
cuda = os.environ.get("PT_CUDA") == "1"
libpt = os.path.join(build, "lib", "libpt_cuda.a" if cuda else "libpt.a")
if not os.path.exists(libpt):
    raise SystemExit("pt: %s not found: run `make` at the top of the tree first "
                     "(or set PT_BUILD to the build folder)%s"
                     % (libpt, "; the CUDA backend needs nvcc" if cuda else ""))
cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
cuda_lib = os.path.join(cuda_home, "lib64")

setup(
    ext_modules=[
        Extension(
            "pt._pt",
            sources=["pt/_pt.c"],
            include_dirs=[os.path.join(root, "client"), root],
            extra_objects=[libpt],
            libraries=["isal", "protobuf-c", "rt", "m"] + (["cudart", "stdc++"] if cuda else []),
            library_dirs=[cuda_lib] if cuda else [],
            runtime_library_dirs=[cuda_lib] if cuda else [],
            extra_compile_args=["-std=c11", "-Wall", "-Wextra"],
        )
    ],
    # always linked anew: the archive (CPU or CUDA, PT_BUILD's) is not a
    # source setuptools would compare, and a stale build in build/ would
    # keep the other backend
    options={"build_ext": {"force": True}},
)
