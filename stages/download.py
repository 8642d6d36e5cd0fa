"""Stage download: fetch the data.dataset archive from data.url and check it against data.md5."""

from _common import load_params, main_guard

from imbsam.data import fetch
from imbsam.datasets import archive_path


def main():
    data = load_params().data
    archive = archive_path(data.dataset)
    fetch(data.url, archive, data.md5, dataset=data.dataset)
    print(f"download: {archive} matches md5 {data.md5.lower()} (from {data.url})")


if __name__ == "__main__":
    main_guard(main)
