"""Build wiring for the optional C accelerator; all other metadata lives in pyproject.toml.

``optional=True`` makes a failed compile a warning, not an install failure: kdns then serves
from the pure-Python loop (kdns/serve/accel.py says which one is in use, and why).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "kdns.serve._fastpath",
            ["kdns/serve/_fastpath.c"],
            extra_compile_args=["-Wall", "-Wextra"],
            optional=True,
        )
    ]
)
