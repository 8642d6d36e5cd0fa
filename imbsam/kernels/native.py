"""imbsam's C sources (onednn_shim.c, batchnorm.c), compiled on first use into the user's cache.

They are built where they run, with the Python build's C compiler, so no wheel has to match the host;
batchnorm.c carries one copy per x86-64 instruction set for homes shared by different machines.
"""

import functools
import hashlib
import os
import subprocess
import sysconfig
from pathlib import Path

from imbsam.files import atomic_path

FLAGS = ("-O3", "-fopenmp", "-shared", "-fPIC")


class BuildError(RuntimeError):
    """The C compiler is missing or refused a source."""


@functools.cache
def build(name):
    """The shared library of imbsam/<name>, compiled into $XDG_CACHE_HOME/imbsam (~/.cache/imbsam)
    once per version of its source and flags."""
    source_path = Path(__file__).with_name(name)
    source = source_path.read_bytes()
    key = hashlib.sha256(source + " ".join(FLAGS).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "imbsam"
    target = cache / f"{source_path.stem}-{key}.so"
    if not target.exists():
        compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
        # Atomic: a concurrent build of the same source writes the same file, and a process loading the library
        # never finds half of it.
        with atomic_path(target) as partial:
            try:
                subprocess.run([compiler, *FLAGS, "-o", str(partial), str(source_path)],
                               check=True, capture_output=True, text=True)
            except (OSError, subprocess.CalledProcessError) as error:
                detail = getattr(error, "stderr", "") or error
                raise BuildError(f"could not compile {source_path.name} with {compiler!r} ({detail}): "
                                 "install a C compiler (apt-get install gcc)") from None
    return str(target)
