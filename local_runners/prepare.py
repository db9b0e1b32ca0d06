"""The ``prepare`` stage: obtain MNIST and write train/validation/test as raw Parquet.

Sources (request ``Source``):

- ``auto``: the local cache, else a download of the four canonical MNIST files, else
  (offline) the bundled 5,000-digit real-MNIST sample in ``fixtures/mnist-sample``;
- ``download``: the cache or a download, nothing else;
- ``fixture``: the bundled sample;
- ``s3://bucket/prefix``: the objects under the prefix, downloaded into
  ``<CacheDir>/s3/...`` and kept up to date by ETag (``local_runners.prepare_s3``), then
  read as a directory;
- anything else: a directory (path or ``file://`` URI) holding IDX file pairs
  ``<prefix>-images-idx3-ubyte[.gz]`` + ``<prefix>-labels-idx1-ubyte[.gz]``; else
  ``*.csv`` files; else ``*.parquet`` files (``local_runners.prepare_tables``); or one
  ``.csv`` / ``.parquet`` file.

Output (the ETL's input contract, see ``glue_etl/mnist_etl.py``):
``<OutputUri>/<split>/part-00000.parquet`` with ``label`` int32 and ``pixels``
list<int32> (H*W grey values 0..255, row-major). Written atomically.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from harness import uris
from harness.config import PROJECT_ROOT
from harness.errors import DataError
from harness.idx import read_image_label_pair
from harness.stages import StageContext, StageRunner
from harness.storage import atomic_dir
from local_runners import prepare_s3, prepare_tables as tables
from local_runners.prepare_tables import ROW_GROUP_ROWS, raw_table  # noqa: F401 (API)
from local_runners.prepare_tables import Pair as _Pair

FIXTURE_DIR = PROJECT_ROOT / "fixtures" / "mnist-sample"
SPLITS = ("train", "validation", "test")
# The canonical MNIST files and their MD5 sums (a request may override with "Checksums").
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
# The smallest image the network of model/network.py accepts: two blocks of a 3x3
# convolution and a 2x2 pooling leave (side - 2) // 2 - 2 >= 2 pixels for the last pooling.
# A smaller image fails only at training time, so prepare refuses it.
MIN_IMAGE_SIDE = 10
_CHUNK = 1 << 16
_IMAGES_RE = re.compile(r"^(?P<prefix>.+)-images[-.]idx3-ubyte(?P<gz>\.gz)?$")
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, socket.timeout,
                   TimeoutError, ConnectionError)


class _Unreachable(Exception):
    """Every mirror failed with a network error (we are probably offline)."""


# ----------------------------------------------------------------------------- download


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download_one(url: str, dest: Path, md5: str, timeout: float, ctx: StageContext) -> None:
    """Fetch ``url`` into ``dest`` atomically; DataError if the MD5 does not match."""
    tmp = dest.with_name(f".{dest.name}.part-{uuid.uuid4().hex[:8]}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http/https)
            total = resp.headers.get("Content-Length")
            h = hashlib.md5()
            with ctx.progress.task(f"download {dest.name}", total=int(total) if total else None
                                   ) as bar, tmp.open("wb") as out:
                for block in iter(lambda: resp.read(_CHUNK), b""):
                    out.write(block)
                    h.update(block)
                    bar.advance(len(block))
        if h.hexdigest() != md5:
            raise DataError("downloaded file fails its MD5 checksum", file=url,
                            expected=f"md5 {md5}", got=h.hexdigest(),
                            hint="the mirror serves a different file; try another mirror")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _cached(cache: Path, checksums: dict[str, str], ctx: StageContext) -> bool:
    """True when every file is in the cache with the right MD5 (bad copies are removed)."""
    ok = True
    for name, md5 in checksums.items():
        path = cache / name
        if not path.is_file():
            ok = False
        elif _md5(path) != md5:
            ctx.log.warning("cached %s fails its MD5 checksum; it will be downloaded again", path)
            path.unlink()
            ok = False
    return ok


def _download_all(cache: Path, mirrors: list[str], checksums: dict[str, str], timeout: float,
                  ctx: StageContext) -> str:
    """Download the missing files into the cache; return the mirror used.

    Raises _Unreachable when a file could be fetched from no mirror because of network
    errors, DataError when a mirror answered with a file that fails its checksum.
    """
    if not mirrors:
        raise _Unreachable("no download mirrors configured (data.download_mirrors)")
    cache.mkdir(parents=True, exist_ok=True)
    used = mirrors[0]
    for name, md5 in checksums.items():
        if (cache / name).is_file():
            continue
        failures: list[str] = []
        checksum_error: DataError | None = None
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            try:
                _download_one(url, cache / name, md5, timeout, ctx)
                used = mirror
                break
            except DataError as e:
                checksum_error = e
                failures.append(f"{url}: {e.problem}")
            except _NETWORK_ERRORS as e:
                failures.append(f"{url}: {getattr(e, 'reason', None) or e}")
            ctx.log.warning("download failed: %s", failures[-1])
        else:
            if checksum_error is not None:
                raise checksum_error
            raise _Unreachable("; ".join(failures))
    return used


# ----------------------------------------------------------------------------- reading


def _expected_names() -> str:
    return ("IDX pairs named <prefix>-images-idx3-ubyte[.gz] + <prefix>-labels-idx1-ubyte[.gz] "
            "(e.g. train-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)")


def _layouts() -> str:
    return (f"{_expected_names()}; or {tables.CSV_LAYOUT}; or {tables.PARQUET_LAYOUT}; "
            "or one .csv or .parquet file")


def find_pairs(directory: Path, layouts: str | None = None) -> list[tuple[str, Path, Path]]:
    """The IDX pairs of ``directory``; ``layouts``: what the errors say is expected (the
    IDX names by default)."""
    expected = layouts or _expected_names()
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        raise DataError("data directory not found", file=str(directory),
                        expected=expected) from None
    except NotADirectoryError:
        raise DataError("data source is not a directory", file=str(directory),
                        expected=f"a directory holding {expected}") from None
    except OSError as e:
        raise DataError(f"cannot read the data directory ({e.strerror})", file=str(directory),
                        expected=expected) from None
    images: dict[str, Path] = {}
    for name in names:
        m = _IMAGES_RE.match(name)
        if m and (m["prefix"] not in images or not m["gz"]):  # prefer the unzipped copy
            images[m["prefix"]] = directory / name
    pairs = []
    for prefix, image_path in sorted(images.items()):
        candidates = [directory / f"{prefix}-labels{sep}idx1-ubyte{gz}"
                      for gz in ("", ".gz") for sep in ("-", ".")]
        labels = next((c for c in candidates if c.is_file()), None)
        if labels is None:
            raise DataError("images file has no labels file beside it", file=str(image_path),
                            expected=f"{prefix}-labels-idx1-ubyte[.gz] in {directory}")
        pairs.append((prefix, image_path, labels))
    if not pairs:
        raise DataError("no IDX image/label pair" + (", CSV or Parquet file" if layouts else "")
                        + " in the data directory", file=str(directory), expected=expected,
                        got=[n for n in names if not n.startswith(".")][:10])
    return pairs


def table_source(path: Path) -> list[Path]:
    """The table files ``prepare`` reads at ``path``: the one .csv / .parquet file
    ``path``, or a directory's CSV files, else its Parquet files, when it holds no IDX
    file; [] when it reads IDX pairs (``find_pairs``). The retraining data is built with
    the same rule."""
    if path.is_file() and path.suffix.lower() in tables.TABLE_SUFFIXES:
        return [path]
    if path.is_dir():
        try:
            if not any(_IMAGES_RE.match(n) for n in os.listdir(path)):
                return tables.table_files(path)
        except OSError:
            pass  # find_pairs names the problem
    return []


def _read_source(path: Path, ctx: StageContext, label_column: str | None
                 ) -> tuple[list[_Pair], str]:
    """IDX pairs when the directory has any, else its CSV files, else its Parquet files
    (or the one .csv / .parquet file ``path``); and what was read, for the user."""
    files = table_source(path)
    if not files:
        return _read_pairs(path, ctx), "IDX files"
    pairs = tables.read_tables(files, ctx, MIN_IMAGE_SIDE, label_column)
    kind = "CSV" if files[0].suffix.lower() == ".csv" else "Parquet"
    return pairs, f"{kind} file{'s' if len(files) > 1 else ''}"


def _read_pairs(directory: Path, ctx: StageContext) -> list[_Pair]:
    found = find_pairs(directory, _layouts())
    pairs = []
    with ctx.progress.task("read IDX files", total=len(found)) as bar:
        for prefix, images_path, labels_path in found:
            images, labels = read_image_label_pair(images_path, labels_path)
            if min(images.shape[1:]) < MIN_IMAGE_SIDE:
                raise DataError("images too small for the network", file=str(images_path),
                                field="rows x columns (dimensions 2-3 of the header)",
                                expected=f"at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels",
                                got=f"{images.shape[1]}x{images.shape[2]}")
            pairs.append(_Pair(prefix, images_path, labels_path, images, labels))
            ctx.log.info("read %s + %s: %d images of %dx%d", images_path.name, labels_path.name,
                         len(labels), images.shape[1], images.shape[2])
            bar.advance()
    first = pairs[0]
    for p in pairs[1:]:
        if p.images.shape[1:] != first.images.shape[1:]:
            raise DataError("image size differs between files", file=str(p.images_path),
                            expected=f"{first.images.shape[1]}x{first.images.shape[2]} "
                            f"like {first.images_path.name}",
                            got=f"{p.images.shape[1]}x{p.images.shape[2]}")
    return pairs


def _split_indices(labels: np.ndarray, fractions: dict[str, float], rng: np.random.Generator
                   ) -> dict[str, np.ndarray]:
    """Stratified split of ``range(len(labels))``: each class is divided by ``fractions``
    (the remainder goes to the first split); each split is shuffled."""
    out: dict[str, list[np.ndarray]] = {name: [] for name in fractions}
    names = list(fractions)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        sizes = {n: int(round(len(idx) * fractions[n])) for n in names[1:]}
        sizes[names[0]] = len(idx) - sum(sizes.values())
        for n in names:
            out[n].append(idx[start:start + sizes[n]])
            start += sizes[n]
    return {n: rng.permutation(np.concatenate(parts)) for n, parts in out.items()}


def _make_splits(pairs: list[_Pair], validation_fraction: float, test_fraction: float,
                 seed: int, ctx: StageContext) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    prefixes = {p.prefix for p in pairs}
    if {"train", "t10k"} <= prefixes:
        test = next(p for p in pairs if p.prefix == "t10k")
        rest = [p for p in pairs if p.prefix != "t10k"]
        ctx.log.info("test split = %s; %s split into train/validation", test.images_path.name,
                     ", ".join(p.images_path.name for p in rest))
        images = np.concatenate([p.images for p in rest])
        labels = np.concatenate([p.labels for p in rest])
        idx = _split_indices(labels, {"train": 1 - validation_fraction,
                                      "validation": validation_fraction}, rng)
        splits = {n: (images[i], labels[i]) for n, i in idx.items()}
        order = rng.permutation(len(test.labels))
        splits["test"] = (test.images[order], test.labels[order])
    else:
        images = np.concatenate([p.images for p in pairs])
        labels = np.concatenate([p.labels for p in pairs])
        idx = _split_indices(labels, {"train": 1 - validation_fraction - test_fraction,
                                      "validation": validation_fraction,
                                      "test": test_fraction}, rng)
        splits = {n: (images[i], labels[i]) for n, i in idx.items()}
    for name in SPLITS:
        if len(splits[name][1]) == 0:
            total = sum(len(p.labels) for p in pairs)
            raise DataError(f"too few examples: {total} give an empty {name} split",
                            file=" + ".join(str(p.images_path) for p in pairs),
                            expected="enough examples per class for train, validation and test")
    return splits


def check_test_split(splits: dict[str, tuple[np.ndarray, np.ndarray]], num_classes: int,
                     minimum: int, files: str) -> None:
    """The gate judges the model on the test split: each class needs ``minimum`` examples
    there, or a model that guesses could pass it."""
    counts = np.bincount(splits["test"][1].astype(np.int64), minlength=num_classes)
    fewest = int(np.argmin(counts))
    if minimum > 0 and counts[fewest] < minimum:
        raise DataError(f"the test split has {int(counts[fewest])} example(s) of class "
                        f"{fewest} ({int(counts.sum())} in all): too few for the gate to "
                        "mean anything", file=files, field="data.min_test_per_class",
                        expected=f"at least {minimum} test examples of every class (more "
                        "data, a larger data.test_fraction, or a lower "
                        "data.min_test_per_class)")


# ----------------------------------------------------------------------------- the runner


class LocalPrepareRunner(StageRunner):
    kind = "prepare"

    def _resolve(self, request: dict[str, Any], ctx: StageContext
                 ) -> tuple[str, Path, str, str]:
        """Return (source kind, directory to read, description, note for the user); the
        description of a directory or S3 source starts with "in": the format goes first."""
        source = str(request.get("Source", "auto"))
        if source == "fixture":
            return "fixture", FIXTURE_DIR, "bundled real-MNIST sample fixtures/mnist-sample", \
                "as requested"
        cache = Path(os.path.expanduser(str(request.get("CacheDir", "~/.cache/mlharness/mnist"))))
        if prepare_s3.is_s3(source):
            local = prepare_s3.fetch(source, cache, ctx.config,
                                     float(request.get("DownloadTimeoutSeconds", 10)), ctx)
            return "s3", local, f"in {source} (local copy {local})", ""
        if source not in ("auto", "download"):
            path = uris.local_path(source) if "://" in source else Path(source).expanduser()
            return "directory", path, f"in {path}", ""
        checksums = dict(request.get("Checksums") or MNIST_MD5)
        if _cached(cache, checksums, ctx):
            return "cache", cache, f"MNIST from the local cache {cache}", ""
        mirrors = list(request.get("Mirrors") or [])
        timeout = float(request.get("DownloadTimeoutSeconds", 10))
        try:
            mirror = _download_all(cache, mirrors, checksums, timeout, ctx)
        except _Unreachable as e:
            if source == "download":
                raise DataError(f"cannot download MNIST: {e}", file=str(cache),
                                expected=f"{', '.join(checksums)} from one of the mirrors "
                                f"{mirrors}", hint="check the network, or use data.source "
                                "'fixture' or a directory of IDX files") from None
            ctx.log.warning("MNIST download failed (%s); using the bundled sample", e)
            return ("fixture", FIXTURE_DIR, "bundled real-MNIST sample fixtures/mnist-sample",
                    "offline fallback (the download failed; see the step log)")
        return "download", cache, f"MNIST downloaded from {mirror} into {cache}", ""

    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        output_uri = request["OutputUri"]
        out_dir = uris.local_path(output_uri)
        if out_dir.exists():
            raise DataError("raw data output already exists; refusing to overwrite it",
                            file=str(out_dir), hint="earlier runs are never modified")
        seed = int(request.get("Seed", 42))
        kind, directory, description, note = self._resolve(request, ctx)
        label_column = request.get("LabelColumn") or None
        pairs, what = _read_source(directory, ctx, label_column)
        if kind in ("directory", "s3"):
            description = f"{what} {description}"
        total = sum(len(p.labels) for p in pairs)
        ctx.announce(f"DATA SOURCE: {description} ({total:,} digits)"
                     + (f" - {note}" if note else ""))
        num_classes = tables.num_classes(pairs)
        splits = _make_splits(pairs, float(request.get("ValidationFraction", 0.1)),
                              float(request.get("TestFraction", 0.1)), seed, ctx)
        check_test_split(splits, num_classes, int(request.get("MinTestPerClass", 0)),
                         " + ".join(str(p.images_path) for p in pairs))
        with atomic_dir(out_dir) as tmp:
            tables.write_raw(tmp, splits, ctx, SPLITS)
        height, width = pairs[0].images.shape[1:]
        counts = {name: int(len(splits[name][1])) for name in SPLITS}
        ctx.log.info("raw splits written to %s: %s", output_uri, counts)
        return {
            "Source": kind,
            "SourceLocation": str(directory),
            "RawUri": output_uri,
            "ImageHeight": int(height),
            "ImageWidth": int(width),
            "NumClasses": num_classes,
            "Counts": counts,
            "Seed": seed,
            **({"SourceUri": request["Source"]} if kind == "s3" else {}),
            **({"LabelColumn": label_column} if label_column else {}),
        }
