"""Compile the order book's hot modules with Cython where a C compiler is at hand (README, "Compiled matching").

Each extension is built from the very ``.py`` that a pure-Python install runs, with the C-level types in the
``.pxd`` beside it. Every step may fail without failing the install: without Cython or if it cannot translate a
module, nothing is compiled; without a C compiler, setuptools skips the optional extensions. Either way the
``.py`` modules run as plain Python, with the same behaviour. ``TOKEX_PURE_PYTHON=1`` skips compiling on purpose.
"""

import os
import sys

from setuptools import Extension, setup

COMPILED = ("matching.level", "matching.side", "matching.book")
CORES = os.cpu_count() or 1
"""Cython translates, and the C compiler compiles, the modules side by side: compiling is most of a first install."""


def extensions() -> list[Extension]:
    if os.environ.get("TOKEX_PURE_PYTHON"):
        return []
    try:
        from Cython.Build import cythonize
        from Cython.Compiler.Errors import CompileError
    except ImportError:
        print("tokex: Cython is missing; the order book stays pure Python", file=sys.stderr)
        return []
    modules = [Extension(name, [name.replace(".", "/") + ".py"]) for name in COMPILED]
    try:
        extensions = cythonize(
            modules,
            build_dir="build/cython",
            nthreads=CORES,
            compiler_directives={
                "language_level": 3,
                # Only the .pxd files give C types: an annotation such as ``post_only: bool`` must not become a type
                # check that raises where the book answers with a Rejected event.
                "annotation_typing": False,
            },
        )
    except CompileError as error:
        print(f"tokex: Cython could not translate {error}; the order book stays pure Python", file=sys.stderr)
        return []
    for extension in extensions:
        extension.optional = True  # set here: cythonize does not carry it over from the Extensions it is given
    return extensions


setup(ext_modules=extensions(), options={"build_ext": {"parallel": CORES}})
