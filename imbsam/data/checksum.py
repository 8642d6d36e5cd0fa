"""md5 of a file, as data.md5 and the split's summary state it."""

import hashlib

_CHUNK = 1 << 20


def md5sum(path):
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()
