"""Inception features for FID and KID: the graph the FID literature uses, or a labelled fallback.

Published FIDs (TTUR, Heusel et al. 2017, and the CelebA tables of RAE, pythae and others
that use its code or pytorch-fid's port of it) come from one network: the frozen graph
`classify_image_graph_def.pb` of `inception-2015-12-05.tgz`. Images of any size with RGB
values 0..255 go into its tensor `ExpandDims:0`; the graph itself resizes them bilinearly to
299x299 and scales them to [-1, 1]; the features are `pool_3:0`, (N, 1, 1, 2048). Other
Inceptions (keras.applications' InceptionV3, torchvision's) give other FIDs, so only
features of that graph are labelled comparable.

`load(source, cache_dir)` returns a FeatureNetwork for a source:

  "ttur"     the graph from <cache_dir>/inception-2015-12-05/, downloaded there once (about
             90 MB) when missing; a failed download is written down and not retried for a day.
             Verified: a graph without both tensors is refused; the sha256 of the download is
             recorded beside it and checked at every use (the publisher gives no checksum to
             pin, so the digest also goes into each result's protocol).
  a path     the graph (.pb) or the archive it comes in (.tgz), e.g. copied from a machine
             that is online; or keras InceptionV3 weights (.h5), not comparable
  "keras"    keras.applications.InceptionV3 with ImageNet weights (downloaded by keras):
             the fallback, labelled not comparable
  "none"     no network (NoInceptionError)

Within one process each source is tried once: a second load() returns the same network or
raises the same error without touching the network again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from facevae.pipeline import files
from facevae.pipeline.schema import file_sha256

TTUR_URL = (
    "https://storage.googleapis.com/download.tensorflow.org/models/image/imagenet/"
    "inception-2015-12-05.tgz"
)
GRAPH_FILE = "classify_image_graph_def.pb"
GRAPH_SUBDIR = "inception-2015-12-05"
INPUT_TENSOR = "ExpandDims:0"  # (1, H, W, 3) float 0..255 in the graph; any batch via input_map
OUTPUT_TENSOR = "pool_3:0"  # (N, 1, 1, 2048)
MAX_DOWNLOAD_BYTES = 256 << 20  # the archive and the graph are each about 90 MB
RETRY_AFTER_S = 24 * 3600  # a failed download is not retried sooner (offline machines)
BATCH = 25  # images per Inception call: its 299x299 activations take ~15 MB per image
KERAS_SIZE = 299
TIMEOUT_S = 30

_attempts: dict[tuple[str, str], FeatureNetwork | Exception] = {}


class NoInceptionError(RuntimeError):
    """No Inception at hand (offline, "none"): FID/KID are reported as null with this reason."""


class InceptionFileError(ValueError):
    """A file given as the Inception source is missing or is not what it claims: a user error."""


@dataclasses.dataclass(frozen=True)
class FeatureNetwork:
    """An image -> feature function with what a reader of the number needs to know."""

    name: str  # e.g. "inception-2015-12-05 pool_3 (TTUR)"
    comparable: bool  # True only for the TTUR graph
    digest: str  # sha256 of the graph or weights file ("" for keras' own download)
    resize: str  # how images reach 299x299
    run: Callable[[np.ndarray], np.ndarray]  # float32 (B, H, W, 3) in 0..255 -> (B, F)

    def features(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3 or 1) uint8, or float in [0, 1] (quantised to uint8 first, as saved
        PNGs would be) -> (N, F) float32, in batches of BATCH."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(
                f"Inception features need (N, H, W, 3 or 1) images, got {images.shape}"
            )
        if images.dtype != np.uint8:
            images = (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        out = []
        for start in range(0, len(images), BATCH):
            batch = images[start : start + BATCH].astype(np.float32)  # (B, H, W, C) 0..255
            if batch.shape[-1] == 1:
                batch = np.repeat(batch, 3, axis=-1)
            out.append(np.asarray(self.run(batch), np.float32).reshape(len(batch), -1))
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def protocol(self) -> dict:
        return {
            "network": self.name,
            "comparable": self.comparable,
            "network_sha256": self.digest or None,
            "resize": self.resize,
        }


def load(source: str, cache_dir: str) -> FeatureNetwork:
    """The feature network of `source` ("ttur", "keras", "none" or a path); see the module doc.

    Raises NoInceptionError (offline, "none": a reason to report) or InceptionFileError
    (an explicit path that is missing or wrong: a user error to stop on).
    """
    key = (source, os.path.abspath(cache_dir))
    if key not in _attempts:
        try:
            _attempts[key] = _load(source, cache_dir)
        except (NoInceptionError, InceptionFileError) as e:
            _attempts[key] = e
    found = _attempts[key]
    if isinstance(found, Exception):
        raise found
    return found


def _load(source: str, cache_dir: str) -> FeatureNetwork:
    if source == "none":
        raise NoInceptionError("`inception_weights`=none")
    if source == "ttur":
        graph = read_graph(cached_graph(cache_dir))
        return graph_network(graph, hashlib.sha256(graph).hexdigest())
    if source == "keras":
        return keras_network("imagenet")
    if not os.path.isfile(source):
        raise InceptionFileError(
            f"no file at {source}: pass the TTUR graph {GRAPH_FILE} (or the .tgz it comes in, "
            f"from {TTUR_URL}), keras InceptionV3 weights (.h5), or ttur/keras/none"
        )
    if source.endswith(".h5"):
        return keras_network(source)
    if source.endswith((".tgz", ".tar.gz")):
        graph = _graph_from_archive(source)
        return graph_network(graph, hashlib.sha256(graph).hexdigest())
    return graph_network(read_graph(source), file_sha256(source))


# --------------------------------------------------------------------------- the TTUR graph


def read_graph(path: str) -> bytes:
    """The bytes of a graph file, refusing anything larger than the real graph could be."""
    size = os.path.getsize(path)
    if size > MAX_DOWNLOAD_BYTES:
        raise InceptionFileError(f"{path} has {size} bytes, more than any Inception graph")
    with open(path, "rb") as f:
        return f.read()


def graph_network(graph: bytes, digest: str) -> FeatureNetwork:
    """A FeatureNetwork from the bytes of a GraphDef with ExpandDims:0 and pool_3:0."""
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(graph)
    except Exception as e:  # protobuf's DecodeError, whatever its module
        raise InceptionFileError(
            f"the Inception graph (sha256 {digest[:12]}) is not a GraphDef ({e}): use "
            f"{GRAPH_FILE} from {TTUR_URL}"
        ) from e
    names = {node.name for node in graph_def.node}
    missing = [t for t in (INPUT_TENSOR, OUTPUT_TENSOR) if t.split(":")[0] not in names]
    if missing:
        raise InceptionFileError(
            f"the graph (sha256 {digest[:12]}) has no tensor {missing}: it is not TTUR's "
            f"Inception; use {GRAPH_FILE} from {TTUR_URL}"
        )

    def imported(images: tf.Tensor) -> tf.Tensor:
        # input_map replaces the graph's single-image ExpandDims output by a whole batch;
        # everything up to pool_3 is batch-agnostic.
        (pool,) = tf.compat.v1.import_graph_def(
            graph_def,
            input_map={INPUT_TENSOR: images},
            return_elements=[OUTPUT_TENSOR],
            name="FID_Inception_Net",
        )
        return pool  # (B, 1, 1, F)

    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    function = tf.compat.v1.wrap_function(imported, [spec])
    return FeatureNetwork(
        name="inception-2015-12-05 pool_3 (TTUR)",
        comparable=True,
        digest=digest,
        resize="bilinear to 299x299 inside the graph (TTUR), from uint8 RGB",
        run=lambda batch: function(tf.constant(batch)).numpy(),
    )


def cached_graph(cache_dir: str) -> str:
    """The path of the TTUR graph in the cache, downloading it once if it is not there."""
    folder = os.path.join(cache_dir, GRAPH_SUBDIR)
    path = os.path.join(folder, GRAPH_FILE)
    recorded = path + ".sha256"
    if os.path.isfile(path):
        with contextlib.suppress(OSError), open(recorded) as f:
            if f.read().strip() != file_sha256(path):
                raise NoInceptionError(
                    f"{path} differs from the copy downloaded (sha256 in {recorded}): "
                    "delete the folder to download it again"
                )
        return path
    failed = os.path.join(folder, "download-failed.json")
    previous = _read_json(failed)
    if previous and time.time() - previous.get("time", 0) < RETRY_AFTER_S:
        when = datetime.datetime.fromtimestamp(previous["time"]).strftime("%Y-%m-%d %H:%M")
        raise NoInceptionError(
            f"the TTUR Inception is not in {folder} and downloading it failed at {when} "
            f"({previous.get('reason')}); not retried for a day: delete {failed} to retry, or "
            f"pass `inception_weights` /path/to/{GRAPH_FILE} (or the .tgz from {TTUR_URL})"
        )
    os.makedirs(folder, exist_ok=True)
    print(f"downloading the TTUR Inception graph from {TTUR_URL}", file=sys.stderr)
    try:
        archive = _download(TTUR_URL)
        try:
            graph = _graph_from_archive(archive)
        finally:
            os.remove(archive)  # the graph is what is kept
        graph_network(graph, "")  # refuses anything but a graph with the two tensors
    except (OSError, InceptionFileError, tarfile.TarError) as e:
        reason = f"{type(e).__name__}: {e}"
        with contextlib.suppress(OSError):
            files.write_bytes(failed, json.dumps({"time": time.time(), "reason": reason}).encode())
        raise NoInceptionError(
            f"the TTUR Inception could not be downloaded ({reason}); pass `inception_weights` "
            f"/path/to/{GRAPH_FILE} or the .tgz from {TTUR_URL} (it is tried again in a day, "
            f"or at once after deleting {failed})"
        ) from e
    files.write_bytes(path, graph)
    digest = hashlib.sha256(graph).hexdigest()
    files.write_bytes(recorded, digest.encode())
    with contextlib.suppress(OSError):
        os.remove(failed)
    print(f"saved {path} (sha256 {digest})", file=sys.stderr)
    return path


def _urlopen(url: str):  # a seam for tests: the one place that touches the network
    return urllib.request.urlopen(url, timeout=TIMEOUT_S)


def _download(url: str) -> str:
    """Downloads into a temporary file (at most MAX_DOWNLOAD_BYTES); returns its path."""
    fd, tmp = tempfile.mkstemp(prefix="facevae-inception-", suffix=".tgz")
    try:
        with _urlopen(url) as response, os.fdopen(fd, "wb") as f:
            total = 0
            for block in iter(lambda: response.read(1 << 20), b""):
                total += len(block)
                if total > MAX_DOWNLOAD_BYTES:
                    raise OSError(f"{url} is larger than {MAX_DOWNLOAD_BYTES >> 20} MB")
                f.write(block)
    except BaseException:
        os.remove(tmp)
        raise
    return tmp


def _graph_from_archive(archive: str) -> bytes:
    """The graph's bytes from inception-2015-12-05.tgz (size checked before reading)."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = [m for m in tar.getmembers() if os.path.basename(m.name) == GRAPH_FILE]
            if not members or not members[0].isfile():
                raise InceptionFileError(f"{archive} holds no {GRAPH_FILE}: use {TTUR_URL}")
            if members[0].size > MAX_DOWNLOAD_BYTES:
                raise InceptionFileError(f"{archive}: {GRAPH_FILE} is too large to be Inception")
            with tar.extractfile(members[0]) as f:
                return f.read()
    except tarfile.TarError as e:
        raise InceptionFileError(f"{archive} is not a readable .tgz ({e}): use {TTUR_URL}") from e


# --------------------------------------------------------------------------- keras fallback


def keras_network(weights: str) -> FeatureNetwork:
    """keras.applications.InceptionV3, average-pooled (2048): not the TTUR graph."""
    import keras

    try:
        with contextlib.redirect_stdout(sys.stderr):  # keras' download notice
            model = keras.applications.InceptionV3(
                include_top=False,
                pooling="avg",
                weights=weights,
                input_shape=(KERAS_SIZE, KERAS_SIZE, 3),
            )
    except Exception as e:  # the download (URLError...) or reading the .h5 file
        if weights == "imagenet":
            raise NoInceptionError(
                f"keras could not download the InceptionV3 ImageNet weights ({type(e).__name__}:"
                f" {e}); pass `inception_weights` /path/to/{GRAPH_FILE}"
            ) from e
        raise InceptionFileError(
            f"{weights} is not keras InceptionV3 no-top weights ({type(e).__name__}: {e})"
        ) from e

    @tf.function(reduce_retracing=True)  # a graph frees each activation once used; eager
    def forward(batch: tf.Tensor) -> tf.Tensor:  # keeps them all: ~8x the peak memory
        resized = tf.image.resize(batch, (KERAS_SIZE, KERAS_SIZE))  # (B, 299, 299, 3) 0..255
        scaled = keras.applications.inception_v3.preprocess_input(resized)
        return model(scaled, training=False)  # (B, 2048)

    def run(batch: np.ndarray) -> np.ndarray:
        return forward(tf.constant(batch)).numpy()

    return FeatureNetwork(
        name="keras InceptionV3 ImageNet (not comparable with published FIDs)",
        comparable=False,
        digest="" if weights == "imagenet" else file_sha256(weights),
        resize="tf.image.resize bilinear to 299x299, from uint8 RGB",
        run=run,
    )


# --------------------------------------------------------------------------- files


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
