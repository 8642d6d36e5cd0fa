"""Stage download: validate the whole of params.yaml, then fetch the data.dataset archive from data.url and check it
against data.md5.

DVC runs this stage first in every repro (dvc.yaml: always_changed), so a bad value anywhere in params.yaml, or
an optimizer or loss with no module, stops the pipeline here with one line, before DVC looks for the modules of
the stages that follow. With the archive in place the stage takes a second (its md5)."""

from imbsam.data.download import fetch
from imbsam.datasets import archive_path
from stages._common import load_params, main_guard


def main():
    data = load_params(groups=None).data
    archive = archive_path(data.dataset)
    fetch(data.url, archive, data.md5, dataset=data.dataset)
    print(f"download: {archive} matches md5 {data.md5.lower()} (from {data.url})")


if __name__ == "__main__":
    main_guard(main)
