"""Long-tailed data from a dataset archive: download and checks, safe extraction, the long-tail rule,
class groups, and the split files the training reads.

What an archive holds and how it is read is its dataset's (imbsam.datasets); nothing here depends on
it. Knows nothing of DVC or params.yaml. InputError messages name the params.yaml key a user would
change because that is where the bad value comes from in this project.
"""

import gzip
import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from tqdm import tqdm

from imbsam import datasets
from imbsam.errors import InputError, one_line

PROFILES = ("exp", "step")
SPLIT_FILES = ("train_images.npy", "train_labels.npy", "test_images.npy", "test_labels.npy")
SUMMARY_FILE = "summary.json"

_CHUNK = 1 << 20


def longtail_counts(num_classes, max_per_class, imb_factor, profile="exp"):
    """Training images kept per class (the LDAM-DRW rule the paper uses).

    exp: int(max_per_class * imb_factor ** (c / (num_classes - 1))).
    step: the first num_classes // 2 classes keep max_per_class, the rest int(max_per_class * imb_factor).
    """
    if profile not in PROFILES:
        raise InputError(f"split.profile={profile!r} is not one of {', '.join(PROFILES)}")
    if isinstance(imb_factor, bool) or not isinstance(imb_factor, (int, float)) or not 0 < imb_factor <= 1:
        raise InputError(f"split.imb_factor={imb_factor!r} must be a number in (0, 1] (0.01 = imbalance factor 100)")
    if num_classes < 2 or max_per_class < 1:
        raise ValueError(f"need num_classes >= 2 and max_per_class >= 1, got {num_classes}, {max_per_class}")
    if profile == "step":
        head = num_classes // 2
        return [max_per_class] * head + [int(max_per_class * imb_factor)] * (num_classes - head)
    return [int(max_per_class * imb_factor ** (c / (num_classes - 1))) for c in range(num_classes)]


def class_groups(counts, many_threshold=100, few_threshold=20):
    """Classes by training count: "many" > many_threshold, "few" < few_threshold, "medium" otherwise."""
    if few_threshold > many_threshold:
        raise InputError(
            f"split.few_threshold={few_threshold} exceeds split.many_threshold={many_threshold}: "
            "set few_threshold <= many_threshold"
        )
    groups = {"many": [], "medium": [], "few": []}
    for c, count in enumerate(counts):
        if count > many_threshold:
            groups["many"].append(c)
        elif count < few_threshold:
            groups["few"].append(c)
        else:
            groups["medium"].append(c)
    return groups


def md5sum(path):
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class _TransientError(Exception):
    """A failed attempt worth retrying (connection reset, short read, timeout, 5xx)."""


def fetch(source, dest, md5, timeout=60, retries=5, backoff=1.0, progress=True, dataset="cifar100"):
    """Put the file at source into dest, checked against md5; return dest as a Path.

    source: an http(s) URL, a file:// URL or a local path. dest is only ever replaced by a file
    whose md5 matches, and a dest that already matches is kept without downloading. An http(s)
    download streams into dest + ".part"; after a failure the .part stays and the next attempt (or
    the next call) resumes it with a Range request. retries: extra attempts after the first, waiting
    backoff, 2 * backoff, 4 * backoff, ... seconds before them. timeout: seconds per connect or read.
    dataset (imbsam.datasets) names the genuine archive in messages.
    """
    genuine = datasets.get(dataset)
    dest = Path(dest)
    expected = str(md5).lower()
    if not re.fullmatch(r"[0-9a-f]{32}", expected):
        raise InputError(f"data.md5={md5!r} is not an md5 (32 hex digits); quote it in params.yaml")
    if dest.is_file() and md5sum(dest) == expected:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    parsed = urlparse(str(source))
    if parsed.scheme in ("http", "https"):
        _http_download(str(source), part, timeout, retries, backoff, progress)
    else:
        local = Path(urllib.request.url2pathname(parsed.path)) if parsed.scheme == "file" else Path(source)
        if not local.is_file():
            raise InputError(
                f"data.url={source!r}: {local} not found; point data.url at a copy of {genuine.ARCHIVE} "
                f"or at {genuine.URL}"
            )
        _copy_with_progress(local, part, progress)
    actual = md5sum(part)
    if actual != expected:
        part.unlink()
        raise InputError(
            f"md5 mismatch for {source}: expected {expected}, got {actual}; point data.url at a good copy "
            f"(the genuine archive's md5 is {genuine.MD5}), or set data.md5={actual} if you knowingly use "
            "another archive"
        )
    os.replace(part, dest)
    return dest


def _progress_bar(name, total, initial, enabled):
    return tqdm(
        total=total,
        initial=initial,
        desc=name,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not enabled,
        file=sys.stderr,
    )


def _copy_with_progress(source, part, progress):
    size = source.stat().st_size
    with open(source, "rb") as src, open(part, "wb") as out, _progress_bar(source.name, size, 0, progress) as bar:
        for block in iter(lambda: src.read(_CHUNK), b""):
            out.write(block)
            bar.update(len(block))


def _offline_hint(part):
    archive = part.name.removesuffix(".part")
    return f"offline: download {archive} elsewhere and set data.url to its local path or file:// URL"


def _http_download(url, part, timeout, retries, backoff, progress):
    last_error = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            _http_attempt(url, part, timeout, progress)
            return
        except _TransientError as e:
            last_error = e
    size = part.stat().st_size if part.exists() else 0
    kept = f"{part} keeps {size} bytes and the next run resumes it; " if size else ""
    raise InputError(f"could not download {url} after {retries + 1} attempts ({last_error}); "
                     f"{kept}{_offline_hint(part)}")


def _http_attempt(url, part, timeout, progress):
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    # A fresh opener per attempt: its default ProxyHandler reads http_proxy / https_proxy / no_proxy
    # from the environment now, whereas urlopen's shared opener froze them at its first use.
    opener = urllib.request.build_opener()
    try:
        with opener.open(request, timeout=timeout) as response:
            if offset and response.status == 206:
                start, total = _content_range(response.headers.get("Content-Range"))
                if start != offset:
                    part.unlink()
                    raise _TransientError(f"server resumed at byte {start} instead of {offset}; restarting")
                mode = "ab"
            else:
                # 200 to a Range request: the server ignores ranges and sends the whole file.
                offset, mode = 0, "wb"
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            _stream(response, part, mode, offset, total, progress)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # Nothing left to send: the .part is complete (or stale, which the md5 check catches).
            return
        if e.code in (408, 425, 429) or e.code >= 500:
            raise _TransientError(f"HTTP {e.code} {e.reason}") from e
        raise InputError(f"data.url={url!r}: HTTP {e.code} {e.reason}; check the URL. {_offline_hint(part)}") from e
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        raise _TransientError(one_line(e)) from e


def _content_range(header):
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (header or "").strip())
    if not match:
        raise _TransientError(f"206 with an unreadable Content-Range {header!r}")
    total = match.group(2)
    return int(match.group(1)), int(total) if total != "*" else None


def _stream(response, part, mode, offset, total, progress):
    written = offset
    name = Path(urlparse(response.url).path).name or part.name
    with open(part, mode) as out, _progress_bar(name, total, offset, progress) as bar:
        for block in iter(lambda: response.read(_CHUNK), b""):
            out.write(block)
            written += len(block)
            bar.update(len(block))
    # http.client returns b"" instead of raising when the server closes early, so count.
    if total is not None and written < total:
        raise _TransientError(f"connection closed after {written} of {total} bytes")


def _strict_data_filter(member, dest_path):
    # The "data" filter strips a leading "/" and extracts such a member inside dest; a genuine
    # CIFAR archive never has one, so refuse it outright.
    if member.name.startswith("/") or os.path.isabs(member.name):
        raise tarfile.AbsolutePathError(member)
    return tarfile.data_filter(member, dest_path)


def safe_extract(archive, dest_dir):
    """Extract a .tar.gz into dest_dir, refusing members that would land outside it.

    Needs Python >= 3.11.4 for tarfile's extraction filters.
    """
    redownload = f"delete {archive} and download it again (dvc repro download)"
    try:
        with gzip.open(archive, "rb") as gz, tarfile.open(fileobj=gz, mode="r:") as tar:
            tar.extractall(dest_dir, filter=_strict_data_filter)
            # tarfile stops at its end-of-archive marker (or silently at a damaged header); reading
            # the rest of the stream makes gzip check its CRC and length, which catch corrupt data.
            while gz.read(_CHUNK):
                pass
    except tarfile.FilterError as e:
        raise InputError(f"{archive}: refusing member {e.tarinfo.name!r} ({e}); {redownload}") from e
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise InputError(f"{archive}: truncated or corrupt archive ({one_line(e)}); {redownload}") from e


def longtail_indices(labels, counts, shuffle_seed=None):
    """Indices of the long-tailed subset, grouped by class: the first counts[c] images of class c.

    File order is the paper's rule; with shuffle_seed, each class is shuffled (seeded) first.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    chosen = []
    for c, count in enumerate(counts):
        members = np.flatnonzero(labels == c)
        if len(members) < count:
            raise InputError(
                f"class {c} has {len(members)} training images but the split asks for {count}; "
                "use the full archive or a larger split.imb_factor"
            )
        if rng is not None:
            members = rng.permutation(members)
        chosen.append(members[:count])
    return np.concatenate(chosen).astype(np.int64)


def write_split(
    out_dir,
    train_images,
    train_labels,
    test_images,
    test_labels,
    class_names,
    *,
    imb_factor,
    profile,
    shuffle_seed,
    many_threshold,
    few_threshold,
    synthetic,
    dataset="cifar100",
):
    """Write the four arrays as .npy (NCHW uint8 images, int32 labels) plus summary.json into out_dir.

    Byte-identical for identical inputs. Written into a sibling folder and renamed into place, so an
    interrupted run never leaves a half-written out_dir.
    """
    out_dir = Path(out_dir)
    num_classes = len(class_names)
    arrays = {
        "train_images.npy": np.ascontiguousarray(train_images, dtype=np.uint8),
        "train_labels.npy": np.ascontiguousarray(train_labels, dtype=np.int32),
        "test_images.npy": np.ascontiguousarray(test_images, dtype=np.uint8),
        "test_labels.npy": np.ascontiguousarray(test_labels, dtype=np.int32),
    }
    class_counts = np.bincount(arrays["train_labels.npy"], minlength=num_classes).tolist()
    groups = class_groups(class_counts, many_threshold, few_threshold)
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        for name, array in arrays.items():
            np.save(partial / name, array)
        summary = {
            "dataset": dataset,
            "imb_factor": imb_factor,
            "profile": profile,
            "shuffle_seed": shuffle_seed,
            "num_classes": num_classes,
            "class_names": list(class_names),
            "class_counts": class_counts,
            "groups": groups,
            "many_threshold": many_threshold,
            "few_threshold": few_threshold,
            "train_total": len(arrays["train_labels.npy"]),
            "test_total": len(arrays["test_labels.npy"]),
            "synthetic": bool(synthetic),
            "md5": {name: md5sum(partial / name) for name in arrays},
        }
        (partial / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        _swap_into_place(partial, out_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return summary


def _swap_into_place(new, target):
    # rename() cannot replace a non-empty directory, so move the old one aside first.
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def build_split(archive, out_dir, *, imb_factor, profile="exp", shuffle_seed=None, many_threshold=100,
                few_threshold=20, dataset="cifar100"):
    """Extract and validate a dataset archive (imbsam.datasets), then write its long-tailed split to out_dir."""
    # Extracted outside out_dir, so nothing but the finished split ever lands in the DVC output.
    with tempfile.TemporaryDirectory(prefix="imbsam-archive-") as tmp:
        safe_extract(archive, tmp)
        data = datasets.get(dataset).read(tmp)
    num_classes = len(data["class_names"])
    # The LDAM-DRW rule's maximum is the balanced per-class count: 500 for CIFAR-100.
    counts = longtail_counts(num_classes, len(data["train_labels"]) // num_classes, imb_factor, profile)
    keep = longtail_indices(data["train_labels"], counts, shuffle_seed)
    return write_split(
        out_dir,
        data["train_images"][keep],
        data["train_labels"][keep],
        data["test_images"],
        data["test_labels"],
        data["class_names"],
        imb_factor=imb_factor,
        profile=profile,
        shuffle_seed=shuffle_seed,
        many_threshold=many_threshold,
        few_threshold=few_threshold,
        synthetic=data["synthetic"],
        dataset=dataset,
    )


def load_split(folder):
    """The arrays write_split wrote (memory-mapped) and "summary", the parsed summary.json."""
    folder = Path(folder)
    missing = [name for name in (*SPLIT_FILES, SUMMARY_FILE) if not (folder / name).is_file()]
    if missing:
        raise InputError(f"{folder}: split not found (missing {', '.join(missing)}); run `dvc repro split`")
    split = {name.removesuffix(".npy"): np.load(folder / name, mmap_mode="r") for name in SPLIT_FILES}
    split["summary"] = json.loads((folder / SUMMARY_FILE).read_text())
    return split
