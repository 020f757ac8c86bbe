"""A source's images and labels: CelebA (official or Kaggle layout) or any image folder.

`scan_source(src)` lists the images of a folder or .zip, finds CelebA's layout and label
files if there are any, reads and checks every label row and assigns each image its split
(CelebA's partition file, else seeded fractions): a Source, which pipeline.prepare turns
into shards. Nothing here decodes an image; the `Reader` reads a file's bytes within a
size limit, for the label files here and for the images in prepare's workers.

Reading is bounded whatever the source holds: archive members that inflate more than
MAX_COMPRESSION_RATIO:1, or whose paths are absolute or contain '..', are skipped unread
(listed with the reason); label files over MAX_LABEL_FILE_MB, MAX_LABEL_ROWS rows or
MAX_LABEL_LINE_CHARS-character lines stop with a PrepareError naming the file.

One module, over 500 lines, because its parts answer one question together: which file of
the source is which (the layout decides where the label files are, the label files which
images are in and in which split).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import math
import os
import posixpath
import re
import stat
import zipfile
import zlib
from collections.abc import Iterator, Sequence

from facevae.pipeline import schema

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
IMAGE_DIR = "img_align_celeba"
LABEL_STEMS = {
    "partition": "list_eval_partition",
    "attributes": "list_attr_celeba",
    "landmarks": "list_landmarks_align_celeba",
    "identity": "identity_CelebA",
}
PARTITION_SPLITS = {0: "train", 1: "validation", 2: "test"}
DEFAULT_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)

# Label files: CelebA's largest (attributes) has 27 MB, 202,599 rows, lines under 600 chars.
# All four at these limits hold ~1 GB while they are checked (measured).
MAX_LABEL_FILE_MB = 32
MAX_LABEL_ROWS = 500_000
MAX_LABEL_LINE_CHARS = 10_000
# An archived member that inflates more than this, and past 1 MiB, is a bomb: images are
# compressed already (deflate can reach ~1000:1 only on runs of identical bytes).
MAX_COMPRESSION_RATIO = 200
_RATIO_MIN_BYTES = 2**20

UNSAFE_MEMBER_REASON = "unsafe path in the archive (absolute, a drive, or '..'): not read"


class PrepareError(ValueError):
    """The source or `out` cannot be used: no images, labels that disagree, a foreign `out`."""


class SkipError(Exception):
    """An input that cannot enter the dataset; the message is the reason in the manifest."""


class TooBigError(SkipError):
    """A file over the size limit of its kind; the caller names the limit's setting."""


def too_big(size: int, limit: int) -> TooBigError:
    return TooBigError(f"{size / 2**20:,.1f} MB, over the {limit / 2**20:g} MB limit")


# --------------------------------------------------------------------------- reading files


@dataclasses.dataclass(frozen=True)
class _File:
    path: str  # posix path in the source, as if every archive were extracted
    container: str | None  # the .zip holding it; None for a plain file
    member: str  # name inside the container, or path relative to the source folder


def _check_member(info: zipfile.ZipInfo, limit: int) -> None:
    """Skips an archived member by its header's sizes, before inflating a byte of it."""
    if info.file_size > limit:
        raise too_big(info.file_size, limit)
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > _RATIO_MIN_BYTES and ratio > MAX_COMPRESSION_RATIO:
        raise SkipError(
            f"inflates {ratio:,.0f}:1 in the archive (over {MAX_COMPRESSION_RATIO}:1, which no "
            "image reaches): a zip bomb or padding, not read"
        )


class Reader:
    """Reads files of a source; keeps one open ZipFile per archive in this process."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._archives: dict[str, zipfile.ZipFile] = {}

    def read(self, container: str | None, member: str, limit: int) -> bytes:
        """The file's bytes; SkipError, unread, when it is larger than `limit` bytes.

        Sizes are checked before reading (the file's, or the archive header's) and the read
        itself stops after `limit` bytes, so a file that grows or a header that lies costs
        no more memory.
        """
        if container is None:
            path = os.path.join(self.root, member)
            info = os.stat(path)
            if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
                raise SkipError("not a regular file (a device, FIFO or socket)")
            if info.st_size > limit:
                raise too_big(info.st_size, limit)
            with open(path, "rb") as f:
                data = f.read(limit + 1)
        else:
            if container not in self._archives:
                self._archives[container] = zipfile.ZipFile(container)
            archive = self._archives[container]
            info = archive.getinfo(member)
            _check_member(info, limit)
            with archive.open(info) as f:
                data = f.read(limit + 1)
        if len(data) > limit:
            raise too_big(len(data), limit)
        return data

    def close(self) -> None:
        for archive in self._archives.values():
            archive.close()
        self._archives.clear()


# Archives fail in many ways: an encrypted member (RuntimeError), an unknown compression
# (NotImplementedError), a truncated or damaged stream (EOFError, zlib.error, BadZipFile).
READ_ERRORS = (
    OSError,
    KeyError,
    EOFError,
    RuntimeError,
    NotImplementedError,
    zlib.error,
    zipfile.BadZipFile,
)


# --------------------------------------------------------------------------- listing files


def _hidden(path: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in path.split("/"))


def _unsafe_member(name: str) -> bool:
    """An absolute path, a drive letter or a `..` part: a name no extraction should follow."""
    parts = name.replace("\\", "/").split("/")
    return (
        name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) is not None or (".." in parts)
    )


def _zip_files(archive: str, prefix: str = "") -> tuple[list[_File], list[dict[str, str]]]:
    """The archive's files, and its members with unsafe paths as skipped entries."""
    try:
        with zipfile.ZipFile(archive) as z:
            names = sorted(i.filename for i in z.infolist() if not i.is_dir())
    except (OSError, zipfile.BadZipFile) as e:
        raise PrepareError(f"cannot open the archive {archive}: {e}") from e
    unsafe = [n for n in names if _unsafe_member(n)]
    skipped = [{"source_id": prefix + n, "reason": UNSAFE_MEMBER_REASON} for n in unsafe]
    files = [_File(prefix + n, archive, n) for n in names if not (n in unsafe or _hidden(n))]
    return files, skipped


def _folder_files(root: str) -> list[_File]:
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        rel = os.path.relpath(folder, root).replace(os.sep, "/")
        for name in sorted(names):
            path = name if rel == "." else f"{rel}/{name}"
            if not _hidden(path):
                files.append(_File(path, None, path))
    return files


def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def _celeba_image_dir(images: list[_File]) -> tuple[str, str] | None:
    """(layout, image folder) when the images sit in CelebA's folder, else None."""
    dirs = {posixpath.dirname(f.path) for f in images}
    kaggle = sorted(d for d in dirs if d.split("/")[-2:] == [IMAGE_DIR, IMAGE_DIR])
    official = sorted(d for d in dirs if d.split("/")[-1] == IMAGE_DIR and d not in kaggle)
    for layout, found in (("kaggle", kaggle), ("official", official)):
        if len(found) > 1:
            raise PrepareError(f"several CelebA image folders in the source: {found}; keep one")
        if found:
            return layout, found[0]
    return None


def _list_files(src: str) -> tuple[list[_File], bool, list[dict[str, str]]]:
    """Every file of a folder or .zip source, whether any comes from an archive, and the
    archive members skipped for their unsafe paths.

    A folder holding CelebA's img_align_celeba.zip unextracted (as downloaded beside the
    label files) is read as if it were extracted in place.
    """
    if os.path.isdir(src):
        files, skipped = _folder_files(src), []
        if _celeba_image_dir([f for f in files if _is_image(f.path)]) is None:
            for f in [f for f in files if posixpath.basename(f.path) == IMAGE_DIR + ".zip"]:
                prefix = posixpath.dirname(f.path)
                nested, unsafe = _zip_files(
                    os.path.join(src, f.member), prefix + "/" if prefix else ""
                )
                files += nested
                skipped += unsafe
        return files, any(f.container for f in files), skipped
    if os.path.isfile(src) and zipfile.is_zipfile(src):
        files, skipped = _zip_files(src)
        return files, True, skipped
    if not os.path.exists(src):
        raise PrepareError(f"`src` {src} does not exist")
    raise PrepareError(f"`src` {src} is neither a folder nor a .zip archive")


# --------------------------------------------------------------------------- label files


@dataclasses.dataclass
class _Table:
    where: str  # the file, for error messages
    names: list[str] | None  # the header's column names (without the file-name column)
    # file name -> (line number, its values joined by single spaces): one string per row,
    # not one per value, keeps CelebA's 8 million attribute values out of memory.
    rows: dict[str, tuple[int, str]]


def _numbered_rows(where: str, text: str, is_csv: bool) -> Iterator[tuple[int, list[str]]]:
    """(line number, tokens) of the non-empty lines; PrepareError on an overlong line."""

    def lines() -> Iterator[str]:
        for no, line in enumerate(io.StringIO(text), 1):
            if len(line) > MAX_LABEL_LINE_CHARS:
                raise PrepareError(
                    f"{where}:{no}: a line of {len(line):,} characters (CelebA's are under 600, "
                    f"the limit is {MAX_LABEL_LINE_CHARS:,}): not a CelebA label file; remove it"
                )
            yield line

    rows = csv.reader(lines()) if is_csv else (line.split() for line in lines())
    for no, tokens in enumerate(rows, 1):
        if tokens:
            yield no, tokens


def _parse_table(where: str, text: str, is_csv: bool) -> _Table:
    """A CelebA label file: optional count line, optional header line, rows `name v1 v2 ...`."""
    lines = _numbered_rows(where, text, is_csv)
    first = next(lines, None)
    count_line, names = None, None
    if is_csv:
        if first is None:
            raise PrepareError(f"{where}: the file is empty; remove it or replace it")
        names, first = [n.strip() for n in first[1][1:]], next(lines, None)
    else:
        if first and len(first[1]) == 1 and first[1][0].isdigit():
            count_line, first = first, next(lines, None)
        if first and not _is_image(first[1][0]):  # rows start with a file name, headers not
            names, first = first[1], next(lines, None)
            if first and len(names) == len(first[1]):  # the header names the file column too
                names = names[1:]
    rows: dict[str, tuple[int, str]] = {}
    for no, tokens in itertools.chain([first] if first else [], lines):
        name = tokens[0].strip()
        if name in rows:
            raise PrepareError(
                f"{where}:{no}: {name} appears again (first on line {rows[name][0]})"
            )
        if len(rows) == MAX_LABEL_ROWS:
            raise PrepareError(
                f"{where}:{no}: more than {MAX_LABEL_ROWS:,} rows (CelebA has 202,599): "
                "not a CelebA label file; remove it"
            )
        rows[name] = (no, " ".join(t.strip() for t in tokens[1:]))
    if count_line is not None and int(count_line[1][0]) != len(rows):
        raise PrepareError(
            f"{where}:{count_line[0]}: the count line says {count_line[1][0]} rows but the file "
            f"has {len(rows)}; the file is incomplete or edited - download it again"
        )
    return _Table(where, names, rows)


def _read_table(
    reader: Reader, files: list[_File], src: str, stem: str, layout: str
) -> _Table | None:
    """The label file `stem`.txt/.csv anywhere in the source (the shallowest), or None."""
    extensions = (".csv", ".txt") if layout == "kaggle" else (".txt", ".csv")
    found = [
        (extensions.index(ext), f.path.count("/"), f.path, f)
        for f in files
        for ext in extensions
        if posixpath.basename(f.path) == stem + ext
    ]
    if not found:
        return None
    f = min(found, key=lambda t: t[:3])[3]
    where = os.path.join(src, f.path)
    try:
        data = reader.read(f.container, f.member, MAX_LABEL_FILE_MB * 2**20)
    except SkipError as e:
        raise PrepareError(
            f"{where}: {e}; CelebA's label files are under 27 MB and the limit for them is "
            f"{MAX_LABEL_FILE_MB} MB: remove or replace the file"
        ) from e
    except READ_ERRORS as e:
        raise PrepareError(f"cannot read {where} ({type(e).__name__}: {e})") from e
    text = data.decode("utf-8-sig", errors="replace")
    del data
    return _parse_table(where, text, f.path.endswith(".csv"))


def _values(table: _Table, name: str, count: int, kind: type, allowed: set | None = None) -> list:
    """The row of `name` converted to `count` values of `kind`, or PrepareError naming the line."""
    no, text = table.rows[name]
    tokens = text.split()
    shown = schema._short(" ".join(tokens))  # a hostile file's row is not echoed whole
    problem = None
    if len(tokens) != count:
        problem = f"expected {count} values after the file name, got {len(tokens)}"
    else:
        try:
            values = [kind(t) for t in tokens]
        except ValueError:
            problem = f"values must be {kind.__name__}s, got {shown}"
        else:
            if allowed is not None and not set(values) <= allowed:
                problem = f"values must be in {sorted(allowed)}, got {shown}"
            elif kind is float and not all(math.isfinite(v) for v in values):
                problem = f"values must be finite, got {shown}"
    if problem:
        raise PrepareError(f"{table.where}:{no}: malformed row for {name}: {problem}")
    return values


def _check_rows(table: _Table, known: set[str], present: list[str], folder: str) -> None:
    """Every row names an image of the source and every image has a row."""
    for name, (no, _) in table.rows.items():
        if name not in known:
            raise PrepareError(
                f"{table.where}:{no}: {name} is not an image of {folder}: the label file and the "
                "images disagree; use the label files that came with these images"
            )
    missing = [name for name in present if name not in table.rows]
    if missing:
        raise PrepareError(
            f"{table.where}: no row for {missing[0]} ({len(missing)} images of {folder} have "
            "none): the label file and the images disagree; use the label files that came with "
            "these images, or remove the file"
        )


# --------------------------------------------------------------------------- the source


@dataclasses.dataclass
class Item:
    """One image of the listing with its labels."""

    index: int  # position in the source listing
    source_id: str
    container: str | None  # the .zip holding it; None for a plain file
    member: str  # name inside the container, or path relative to the source folder
    split: str
    attributes: list[int] | None = None  # 0/1 per attribute name
    landmarks: list[float] | None = None  # (10,) x, y in source pixels
    identity: int | None = None


@dataclasses.dataclass
class Source:
    """A scanned source: what prepare() processes and what the manifest says about it."""

    path: str
    layout: str  # official, kaggle or folder
    archive: bool
    items: list[Item]
    skipped: list[dict[str, str]]  # {"source_id", "reason"}: inputs left out, and why
    attribute_names: list[str]
    has_landmarks: bool
    has_identity: bool
    split_fractions: list[float] | None  # None: the official partition

    @property
    def root(self) -> str:
        """The folder that Item.member paths of plain files are relative to."""
        return self.path if os.path.isdir(self.path) else os.path.dirname(self.path)


def split_by_fractions(ids: list[str], fractions: Sequence[float], seed: int) -> list[str]:
    """A seeded split with exact counts; ranking by a hash of (seed, id) keeps it stable.

    The cumulative boundaries are rounded, not each count, so a split of fraction 0 stays empty.
    """
    n, total = len(ids), sum(fractions)
    n_train = round(fractions[0] / total * n)
    n_train_validation = round((fractions[0] + fractions[1]) / total * n)
    order = sorted(range(n), key=lambda i: hashlib.sha256(f"{seed}/{ids[i]}".encode()).digest())
    splits = [""] * n
    for rank, i in enumerate(order):
        splits[i] = (
            "train" if rank < n_train else "validation" if rank < n_train_validation else "test"
        )
    return splits


def check_fractions(fractions: Sequence[float | str]) -> list[float]:
    """Three non-negative numbers (train, validation, test) that sum to 1, as floats."""
    try:
        values = [float(f) for f in fractions]
    except (TypeError, ValueError):
        values = None
    if values is None or len(values) != 3 or min(values) < 0 or abs(sum(values) - 1) > 1e-6:
        shown = schema._short(list(fractions) if values is None else values)
        raise ValueError(
            f"`split_fractions` {shown} must be three non-negative numbers (train, validation, "
            "test) that sum to 1"
        )
    return values


def scan_source(
    src: str,
    *,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    seed: int = 0,
    limit: int | None = None,
) -> Source:
    """Lists the images of `src`, reads and checks its label files, assigns the splits.

    Raises PrepareError for a source that cannot be used, ValueError for bad fractions.
    """
    src = os.path.abspath(os.path.expanduser(src))
    fractions = check_fractions(split_fractions)
    files, archive, unsafe = _list_files(src)
    images = [f for f in files if _is_image(f.path)]
    if not images:
        archives = [f.path for f in files if f.path.lower().endswith(".zip")]
        hint = (
            f"; it holds {archives[:3]}: pass the one with the images as `src`" if archives else ""
        )
        raise PrepareError(
            f"no images in {src}: expected {IMAGE_DIR}/ (official CelebA), "
            f"{IMAGE_DIR}/{IMAGE_DIR}/ (Kaggle) or any folder of "
            f"{'/'.join(IMAGE_EXTENSIONS)} files{hint}"
        )
    found = _celeba_image_dir(images)
    if found is None:
        source = _folder_source(src, archive, images, fractions, seed, limit)
        return dataclasses.replace(source, skipped=unsafe + source.skipped)
    layout, image_dir = found
    in_dir = {
        posixpath.basename(f.path): f for f in images if posixpath.dirname(f.path) == image_dir
    }
    reader = Reader(src)
    try:
        tables = {
            kind: _read_table(reader, files, src, stem, layout)
            for kind, stem in LABEL_STEMS.items()
        }
    finally:
        reader.close()
    source = _celeba_source(src, layout, archive, image_dir, in_dir, tables, fractions, seed, limit)
    return dataclasses.replace(source, skipped=unsafe + source.skipped)


def _folder_source(
    src: str,
    archive: bool,
    images: list[_File],
    fractions: list[float],
    seed: int,
    limit: int | None,
) -> Source:
    images = images[:limit]
    ids = [f.path for f in images]
    splits = split_by_fractions(ids, fractions, seed)
    pairs = enumerate(zip(images, splits, strict=True))
    items = [Item(i, f.path, f.container, f.member, split) for i, (f, split) in pairs]
    return Source(src, "folder", archive, items, [], [], False, False, fractions)


def _celeba_source(
    src: str,
    layout: str,
    archive: bool,
    image_dir: str,
    in_dir: dict[str, _File],
    tables: dict[str, _Table | None],
    fractions: list[float],
    seed: int,
    limit: int | None,
) -> Source:
    folder = os.path.join(src, image_dir)
    partition = tables.pop("partition")
    skipped = []
    if partition is None:
        names = sorted(in_dir)
        splits = split_by_fractions(names[:limit], fractions, seed)
    else:
        names = list(partition.rows)
        allowed = set(PARTITION_SPLITS)
        splits = [
            PARTITION_SPLITS[_values(partition, n, 1, int, allowed)[0]] for n in names[:limit]
        ]
        for name in sorted(set(in_dir) - set(partition.rows)):
            reason = f"not listed in {partition.where}, so it has no split"
            skipped.append({"source_id": name, "reason": reason})
    present = [name for name in names if name in in_dir]
    for table in tables.values():
        if table is not None:
            _check_rows(table, set(names) | set(in_dir), present, folder)
    attributes, landmarks, identity = tables["attributes"], tables["landmarks"], tables["identity"]
    attribute_names = (attributes.names or list(schema.CELEBA_ATTRIBUTES)) if attributes else []
    if landmarks and landmarks.names and len(landmarks.names) != schema.NUM_LANDMARK_VALUES:
        raise PrepareError(
            f"{landmarks.where}: the header names {len(landmarks.names)} columns, expected "
            f"{schema.NUM_LANDMARK_VALUES} (x, y of eyes, nose and mouth corners)"
        )
    items = []
    for index, (name, split) in enumerate(zip(names[:limit], splits, strict=True)):
        if name not in in_dir:
            line = partition.rows[name][0]  # only a partition lists files that are not there
            reason = f"listed in {partition.where} (line {line}) but missing from {folder}"
            skipped.append({"source_id": name, "reason": reason})
            continue
        f = in_dir[name]
        item = Item(index, name, f.container, f.member, split)
        if attributes:
            values = _values(attributes, name, len(attribute_names), int, {-1, 0, 1})
            item.attributes = [int(v == 1) for v in values]  # CelebA's 1 / -1 -> 1 / 0
        if landmarks:
            item.landmarks = _values(landmarks, name, schema.NUM_LANDMARK_VALUES, float)
        if identity:
            item.identity = _values(identity, name, 1, int)[0]
        items.append(item)
    return Source(
        src,
        layout,
        archive,
        items,
        skipped,
        attribute_names,
        landmarks is not None,
        identity is not None,
        None if partition else fractions,
    )
