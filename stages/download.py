"""Stage download: fetch the CIFAR-100 python archive from data.url and check it against data.md5."""

import re
from pathlib import Path

from _common import load_params, main_guard, param

from imbsam.data import fetch

ARCHIVE = Path("data/cifar-100-python.tar.gz")


def main():
    params = load_params()
    url = param(
        params,
        "data.url",
        check=(lambda v: isinstance(v, str) and v.strip() != "", "an http(s) URL, a file:// URL or a local path"),
    )
    md5 = param(
        params,
        "data.md5",
        check=(lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-fA-F]{32}", v), "32 hex digits, in quotes"),
    )
    fetch(url, ARCHIVE, md5)
    print(f"download: {ARCHIVE} matches md5 {md5.lower()} (from {url})")


if __name__ == "__main__":
    main_guard(main)
