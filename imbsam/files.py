"""Files written whole or not at all: a reader never sees half a file, and a process killed while writing
leaves the old file (or none), never a truncated one."""

import contextlib
import os
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """A path beside `path` to write to; when the block ends without error, one rename puts it in place of
    `path`, and on an error it goes. It keeps `path`'s suffix (MindSpore's save_checkpoint insists on .ckpt),
    is hidden, and names the writing process, so that writers of the same file never share it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.{os.getpid()}{path.suffix}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_text(path, text):
    """Replace `path`'s content with `text` atomically (atomic_path)."""
    with atomic_path(path) as partial:
        partial.write_text(text)
