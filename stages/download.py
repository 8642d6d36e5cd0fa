"""Stage download: fetch the CIFAR-100 python archive from data.url and check it against data.md5."""

from pathlib import Path

from _common import load_params, main_guard

from imbsam.data import fetch

ARCHIVE = Path("data/cifar-100-python.tar.gz")


def main():
    data = load_params().data
    fetch(data.url, ARCHIVE, data.md5)
    print(f"download: {ARCHIVE} matches md5 {data.md5.lower()} (from {data.url})")


if __name__ == "__main__":
    main_guard(main)
