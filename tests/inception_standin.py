"""A small stand-in for TTUR's Inception graph, for tests that cannot download the real one.

It has the real graph's interface: a JPEG string placeholder `DecodeJpeg/contents` ->
`DecodeJpeg` -> `Cast` -> `ExpandDims` (1, H, W, 3) float 0..255 -> `ResizeBilinear` ->
scaling to [-1, 1] -> one fixed random convolution -> `pool_3` (N, 1, 1, F) -> a
`pool_3/_reshape` to (1, F) that only works for one image. So model/inception.py's
batching through `ExpandDims:0` and `pool_3:0` is exercised as with the real graph.
"""

import io
import os
import tarfile

import numpy as np
import tensorflow as tf

FEATURES = 32
SIDE = 16  # the real graph resizes to 299


def graph_bytes(features: int = FEATURES, side: int = SIDE, seed: int = 0) -> bytes:
    graph = tf.Graph()
    with graph.as_default():
        contents = tf.compat.v1.placeholder(tf.string, [], name="DecodeJpeg/contents")
        image = tf.io.decode_jpeg(contents, channels=3, name="DecodeJpeg")
        pixels = tf.cast(image, tf.float32, name="Cast")
        batch = tf.expand_dims(pixels, 0, name="ExpandDims")  # (1, H, W, 3)
        resized = tf.compat.v1.image.resize_bilinear(batch, [side, side], name="ResizeBilinear")
        scaled = tf.multiply(tf.subtract(resized, 128.0), 1 / 128.0, name="Mul")
        kernel = np.random.default_rng(seed).standard_normal((5, 5, 3, features))
        conv = tf.nn.relu(tf.nn.conv2d(scaled, tf.constant(kernel, tf.float32), 1, "SAME"))
        pool = tf.nn.avg_pool2d(conv, [side, side], [1, 1], "VALID", name="pool_3")
        tf.reshape(pool, [1, features], name="pool_3/_reshape")
    # Attributes are protobuf maps: only deterministic serialization gives the same bytes.
    return graph.as_graph_def().SerializeToString(deterministic=True)


def write_graph(path: str, **kwargs) -> str:
    with open(path, "wb") as f:
        f.write(graph_bytes(**kwargs))
    return path


def write_archive(path: str, **kwargs) -> str:
    """A .tgz laid out as inception-2015-12-05.tgz, holding the stand-in graph."""
    graph = graph_bytes(**kwargs)
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("classify_image_graph_def.pb")
        info.size = len(graph)
        tar.addfile(info, io.BytesIO(graph))
        readme = b"stand-in"
        info = tarfile.TarInfo("LICENSE")
        info.size = len(readme)
        tar.addfile(info, io.BytesIO(readme))
    return os.path.abspath(path)
