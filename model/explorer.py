"""The latent-space explorer of a trained run (`sample.py --mode explore`): state and images.

    explorer = open_explorer(ExploreConfig(workdir="runs/demo"))  # restores, encodes, caches
    session = explorer.new_session()  # one browser tab's faces
    image = explorer.image(session, explorer.defaults())  # (384, 384, 3) uint8, the big face
    session = explorer.random_face(session, "gmm")  # a new face; the sliders stay where they are

A face is a latent code: a draw from the prior, an encoded test image or an encoded upload.
What is shown is `latent(session, values)` decoded, where `values` are the sliders' values in
the order of `explorer.sliders`:

    z = slerp(A, B, walk) + sum_a strength_a * vector_a + sum_d shift_d * e_d

A and B are the session's face and its walk target (a random draw is centre + T * noise, T
the temperature: N(0, T^2 I), or a mixture component's mean plus T times its noise; an
encoded image is its z_mean), vector_a the attribute vectors sample.py and evaluate.py use
(model.codes), e_d the latent dimensions with the most KL on the test images. Every value is
checked (`check_values`); a bad one is an ExplorerError whose message the page shows.

Uploads go through the dataset's own crop and resize (pipeline.recipe.transform), their size
checked from the header before any decoding (UPLOAD_LIMITS). The Gradio page is
model/explorer_ui.py; this module imports no Gradio. `serve` is what sample.py calls.

One module, over 500 lines, because a session's faces, the sliders' checks and the uploads
make one state that every request reads and changes together.
"""

from __future__ import annotations

import dataclasses
import io
import math
import socket
import sys
import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
from PIL import Image

from facevae.model import analysis, codes, sampling
from facevae.model import prior as priors  # `prior` is also a setting's name
from facevae.model import workdir as wd
from facevae.model.console import short
from facevae.model.grid import to_uint8
from facevae.model.sample_config import FLOAT_BOUNDS, INT_RANGES
from facevae.model.vae import VAE
from facevae.pipeline import recipe, schema
from facevae.pipeline.sources import SkipError

MODE = "explore"  # sample.py's mode
INSTALL = 'pip install -e ".[explore]"'
DISPLAY_SIDE = 384  # the face is enlarged (nearest neighbour) to about this many pixels
TEST_FACES = 64  # test images kept for the "test image" button
MAX_KL_IMAGES = 5000  # test images encoded to rank the dimensions by KL, at most
EDIT_RANGE = 3.0  # attribute strengths and dimension shifts: -3..3
MAX_TEMPERATURE = 2.0
# Uploads: 20 MB and 40 megapixels, checked before decoding (recipe.Limits, as preparation).
UPLOAD_LIMITS = recipe.Limits(max_file_mb=20, max_megapixels=recipe.MAX_MEGAPIXELS)
LABELS = {"normal": "N(0, I)", "gmm": "mixture prior"}
AE_NOTE = (
    "This run is a plain autoencoder (mode `ae`): nothing pulled its codes towards N(0, I), "
    "so faces drawn from N(0, I) land where no training face was encoded and come out "
    "broken. The mixture prior is fitted to the codes themselves, so its faces work for "
    "both kinds of run."
)


class ExplorerError(ValueError):
    """A request or setting the explorer refuses; the message says why, in one line."""


@dataclasses.dataclass(frozen=True)
class ExploreConfig:
    """What `serve` needs; sample.py's flags of the same names."""

    workdir: str
    data_dir: str | None = None  # None: the dataset the run was trained on
    split: str | None = None  # test images; None: test, else validation, else train
    seed: int = 0  # random faces are seed, seed + 1, ...
    temperature: float = 1.0  # the temperature slider's start
    num_dims: int = 8  # dimension sliders (the most KL first)
    max_examples: int = 1000  # test images encoded to rank the dimensions by KL
    batch_size: int = 64
    host: str = "127.0.0.1"
    port: int = 7860

    def __post_init__(self) -> None:
        if not isinstance(self.workdir, str) or not self.workdir:
            raise ExplorerError("`workdir` is needed: the run directory written by training")
        for name, (low, high) in {
            **{k: INT_RANGES[k] for k in ("seed", "batch_size")},
            "num_dims": (1, 64),
            "max_examples": (1, MAX_KL_IMAGES),
            "port": (1, 65535),
        }.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ExplorerError(f"`{name}` must be in {low}..{high} here, got {short(value)}")
        temperature = self.temperature
        if not (_number(temperature) and 0 < temperature <= MAX_TEMPERATURE):
            raise ExplorerError(
                f"`temperature` must be in (0, {MAX_TEMPERATURE:g}] here, got {short(temperature)}"
            )
        if not isinstance(self.host, str) or not self.host or any(c.isspace() for c in self.host):
            raise ExplorerError(f"`host` must be a host name or address, got {short(self.host)}")


assert FLOAT_BOUNDS["temperature"] >= MAX_TEMPERATURE  # a value sample.py also takes


def _number(value: object) -> bool:
    """A finite real number (a JSON integer of 400 digits is not one: float() overflows)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return False
    try:
        return math.isfinite(float(value))
    except (OverflowError, TypeError, ValueError):
        return False


@dataclasses.dataclass(frozen=True)
class Slider:
    """One control: `key` is stable (temperature, walk, attr:<name>, dim:<d>)."""

    key: str
    label: str
    minimum: float
    maximum: float
    step: float
    value: float  # where it starts, and where `reset` puts it


@dataclasses.dataclass(frozen=True)
class Face:
    """A latent code as centre + T * spread; `original` is the image it was encoded from."""

    centre: np.ndarray  # (z_dim,) float64
    spread: np.ndarray  # (z_dim,) float64; zeros for an encoded image
    label: str
    original: np.ndarray | None = None  # (H, W, C) uint8

    def code(self, temperature: float) -> np.ndarray:
        return self.centre + temperature * self.spread


@dataclasses.dataclass(frozen=True)
class Session:
    """One page's state: its face, the walk's other end, and counters for the next draws."""

    face: Face
    target: Face
    draws: int = 0  # random faces drawn: the next one's seed is seed + draws
    next_test: int = 0  # the next test image shown


class Explorer:
    """A restored run with everything the page needs, computed once (see open_explorer)."""

    def __init__(
        self,
        model: VAE,
        manifest: schema.Manifest,
        config: ExploreConfig,
        *,
        test_images: np.ndarray,
        test_codes: np.ndarray,
        kl: np.ndarray,
        vectors: dict[str, np.ndarray],
        gmm: priors.GaussianMixture | None,
        notes: Sequence[str] = (),
    ) -> None:
        self.model, self.manifest, self.config = model, manifest, config
        self.run_mode = model.mode  # "vae" or "ae"
        self.z_dim = model.network.z_dim
        self.image_shape = tuple(model.network.image_shape)
        self.test_images, self.test_codes = test_images, test_codes  # (T, H, W, C), (T, z)
        self.kl = kl
        self.dims = [int(d) for d in np.argsort(-kl, kind="stable")[: config.num_dims]]
        self.vectors = vectors  # attribute name -> (z_dim,), defined ones only
        self.gmm = gmm
        self.notes = list(notes)
        self.scale = max(1, DISPLAY_SIDE // max(self.image_shape[:2]))
        self.sliders = self._sliders()
        self._decode = tf.function(
            lambda z: self.model.decode(z),
            input_signature=[tf.TensorSpec((None, self.z_dim), tf.float32)],
        )
        self._encode = tf.function(
            lambda x: self.model.encode(x)[0],
            input_signature=[tf.TensorSpec((None, *self.image_shape), tf.float32)],
        )

    # ----------------------------------------------------------------------- controls

    def _sliders(self) -> list[Slider]:
        edit = dict(minimum=-EDIT_RANGE, maximum=EDIT_RANGE, step=0.1, value=0.0)
        return [
            Slider("temperature", "temperature (random faces)", 0.0, MAX_TEMPERATURE, 0.05,
                   self.config.temperature),
            Slider("walk", "walk from this face to the target (slerp)", 0.0, 1.0, 0.05, 0.0),
            *[Slider(f"attr:{name}", name.replace("_", " "), **edit) for name in self.vectors],
            *[Slider(f"dim:{d}", f"dimension {d} (KL {self.kl[d]:.3g} nats)", **edit)
              for d in self.dims],
        ]  # fmt: skip

    @property
    def priors(self) -> tuple[str, ...]:
        """The priors random faces can come from: normal, and gmm when it was fitted."""
        return ("normal", "gmm") if self.gmm is not None else ("normal",)

    def defaults(self) -> list[float]:
        return [s.value for s in self.sliders]

    def check_values(self, values: Sequence[object]) -> np.ndarray:
        """The sliders' values as float64 (S,); ExplorerError for a missing or extra value, a
        non-number, or one outside its slider's range (a hand-made request's)."""
        if len(values) != len(self.sliders):
            raise ExplorerError(
                f"{len(values)} control values sent, the page has {len(self.sliders)} sliders: "
                "reload the page"
            )
        checked = np.empty(len(values))
        for i, (slider, value) in enumerate(zip(self.sliders, values, strict=True)):
            if not (_number(value) and slider.minimum <= value <= slider.maximum):
                raise ExplorerError(
                    f"{slider.label}: {short(value, 20)} is outside "
                    f"{slider.minimum:g}..{slider.maximum:g}; the value was not used"
                )
            checked[i] = float(value)
        return checked

    # ----------------------------------------------------------------------- images

    def latent(self, session: Session, values: Sequence[object]) -> np.ndarray:
        """The code shown for these slider values: (z_dim,) float64."""
        v = self.check_values(values)
        temperature, walk = v[0], v[1]
        a, b = session.face.code(temperature), session.target.code(temperature)
        z = analysis.slerp(a, b, np.array([walk]))[0] if walk > 0 else a.copy()
        strengths = v[2 : 2 + len(self.vectors)]
        for strength, vector in zip(strengths, self.vectors.values(), strict=True):
            z += strength * vector
        z[self.dims] += v[2 + len(self.vectors) :]
        return z

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Codes (N, z_dim) -> images (N, H, W, C) uint8."""
        return to_uint8(self._decode(tf.constant(np.asarray(z, np.float32))).numpy())

    def enlarge(self, image: np.ndarray, scale: int | None = None) -> np.ndarray:
        """(H, W, C) -> (sH, sW, C), nearest neighbour: the pixels stay sharp."""
        scale = self.scale if scale is None else scale
        return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)

    def image(self, session: Session, values: Sequence[object]) -> np.ndarray:
        """The big face for these slider values: what the page shows after every change."""
        return self.enlarge(self.decode(self.latent(session, values)[None])[0])

    def original(self, session: Session) -> np.ndarray | None:
        """The image the face was encoded from, enlarged half as much; None for a draw."""
        found = session.face.original
        return None if found is None else self.enlarge(found, max(1, self.scale // 2))

    # ----------------------------------------------------------------------- faces

    def new_session(self) -> Session:
        """A page's first state: the first test image, walking towards the second."""
        face = self.test_face(0)
        target = self.test_face(1) if len(self.test_codes) > 1 else self.prior_face("normal", 0)
        return Session(face, target, next_test=2 % len(self.test_codes))

    def test_face(self, index: int) -> Face:
        index %= len(self.test_codes)
        return Face(self.test_codes[index], np.zeros(self.z_dim), f"test image {index}",
                    self.test_images[index])  # fmt: skip

    def prior_face(self, prior: str, draw: int) -> Face:
        """Draw number `draw` (seed + draw) from N(0, I) or the mixture prior, split into its
        centre (0, or the component's mean) and its noise, which the temperature scales."""
        if prior not in self.priors:
            raise ExplorerError(f"prior {short(prior, 20)}: use one of {list(self.priors)}")
        seed = (self.config.seed + draw) % (INT_RANGES["seed"][1] + 1)
        centre = priors.latents(prior, 1, self.z_dim, seed, 0.0, self.gmm)[0]
        code = priors.latents(prior, 1, self.z_dim, seed, 1.0, self.gmm)[0]
        centre, code = centre.astype(np.float64), code.astype(np.float64)
        return Face(centre, code - centre, f"random face {draw} from {LABELS[prior]}")

    def random_face(self, session: Session, prior: str) -> Session:
        face = self.prior_face(prior, session.draws)
        return dataclasses.replace(session, face=face, draws=session.draws + 1)

    def next_test_face(self, session: Session) -> Session:
        face = self.test_face(session.next_test)
        return dataclasses.replace(session, face=face, next_test=session.next_test + 1)

    def random_target(self, session: Session, prior: str) -> Session:
        target = self.prior_face(prior, session.draws)
        return dataclasses.replace(session, target=target, draws=session.draws + 1)

    def test_target(self, session: Session) -> Session:
        target = self.test_face(session.next_test)
        return dataclasses.replace(session, target=target, next_test=session.next_test + 1)

    def upload(self, session: Session, data: bytes | None) -> Session:
        """The session with an uploaded photo as its face: cropped and resized as the
        dataset was, then encoded. ExplorerError for anything that is not a usable image."""
        image = upload_image(data, self.manifest, self.image_shape)
        z = self._encode(tf.constant(image[None].astype(np.float32) / 255.0)).numpy()[0]
        face = Face(z.astype(np.float64), np.zeros(self.z_dim), "your upload", image)
        return dataclasses.replace(session, face=face)

    # ----------------------------------------------------------------------- the page's text

    def summary(self) -> str:
        """One paragraph on the run: its kind, where its codes lie, what is available."""
        norm = float(np.linalg.norm(self.test_codes, axis=1).mean())
        text = (
            f"A {self.run_mode} run with {self.z_dim} latent dimensions. Its test codes have "
            f"|z| = {norm:.2f} on average; draws from N(0, I) have |z| = "
            f"{math.sqrt(self.z_dim):.2f}."
        )
        return " ".join([text, *self.notes])


# --------------------------------------------------------------------------- uploads


def upload_crop(manifest: schema.Manifest, width: int, height: int) -> recipe.Crop:
    """The crop an upload of width x height gets: the dataset's, where it fits the photo.

    A dataset's box was made for its source images: CelebA's (0, 40, 178, 218) for its
    aligned 178x218 faces, a box given for a folder for that folder's photos. It is used on
    images it fits; any other photo gets its largest centred square, as preparation does
    for an image folder (recipe.resolve_crop), instead of a corner cut out by the box.
    """
    crop = manifest.crop
    if isinstance(crop, str) and crop in ("center", "none"):
        return crop
    try:
        box = tuple(int(v) for v in crop)
        recipe.Recipe(crop=box)  # a valid box
    except (TypeError, ValueError):
        return "center"
    if box == schema.CELEBA_CROP and manifest.source_layout != "folder":
        return box if (width, height) == schema.CELEBA_IMAGE_SIZE else "center"
    return box if box[2] <= width and box[3] <= height else "center"


def upload_image(
    data: bytes | None,
    manifest: schema.Manifest,
    shape: Sequence[int],
    limits: recipe.Limits = UPLOAD_LIMITS,
) -> np.ndarray:
    """An uploaded file's bytes as the dataset would hold it: (H, W, C) uint8, cropped and
    resized by pipeline.recipe with the manifest's crop and resampling. Sizes are checked
    before anything is decoded; ExplorerError says what is wrong."""
    if not data:
        raise ExplorerError("the upload is empty: choose a photo (JPEG, PNG, WebP, ...)")
    if not isinstance(data, bytes):
        raise ExplorerError("the upload did not arrive as a file; choose a photo again")
    if len(data) > limits.max_file_bytes:
        raise ExplorerError(
            f"the upload has {len(data) / 2**20:.1f} MB, more than the {limits.max_file_mb} MB "
            "an upload may have; choose a smaller photo"
        )
    height, width, channels = shape
    if channels != schema.CHANNELS:
        raise ExplorerError(f"this run takes {channels}-channel images; uploads are RGB")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as opened:  # the header only
                size, kind = opened.size, opened.format
                # EXIF orientation turns the photo before cropping: a box fits the turned
                # one. A PNG's getexif decodes the whole image, so PNGs are taken as stored.
                turned = size[0] * size[1] <= limits.max_pixels and kind != "PNG"
                rotated = turned and opened.getexif().get(0x0112, 1) in (5, 6, 7, 8)
        except Image.DecompressionBombError:
            size, rotated = (limits.max_pixels + 1, 1), False  # refused below
        except Exception as e:  # PIL raises many kinds for what is not an image
            raise ExplorerError(
                f"the upload is not an image PIL can read ({type(e).__name__}); choose a "
                "JPEG, PNG or WebP photo"
            ) from None
    if size[0] * size[1] > limits.max_pixels:
        raise ExplorerError(
            f"the upload is {size[0]}x{size[1]} pixels, more than {limits.max_megapixels} "
            "megapixels; it was not decoded: choose a smaller photo"
        )
    if height != width:
        raise ExplorerError(f"this run takes {height}x{width} images; uploads are made square")
    width_up, height_up = size[::-1] if rotated else size
    resample = manifest.resample if manifest.resample in recipe.RESAMPLE_FILTERS else "lanczos"
    how = recipe.Recipe(
        size=height, crop=upload_crop(manifest, width_up, height_up), resample=resample, fmt="raw"
    )
    try:
        raw, _ = recipe.transform(data, how, max_pixels=limits.max_pixels)
    except SkipError as e:
        raise ExplorerError(f"the upload cannot be used: {short(e, 160)}") from None
    return np.frombuffer(raw, np.uint8).reshape(height, width, channels)


# --------------------------------------------------------------------------- building one


def open_explorer(config: ExploreConfig, say: Callable[[str], None] | None = None) -> Explorer:
    """Restores the run and computes what the page needs: test codes (the KL ranking and the
    test images), the attribute vectors and the mixture prior (both cached in the workdir,
    sharing one pass over the training images when neither is cached)."""
    say = say or (lambda text: print(text, file=sys.stderr))
    model, run_config = wd.restore(config.workdir)
    data_dir = config.data_dir or run_config.flags.data_dir
    if not data_dir:
        raise ExplorerError(
            f"`data_dir` is needed: {wd.config_path(config.workdir)} names no dataset"
        )
    manifest = schema.Manifest.read(data_dir)
    manifest.check_image_shape(model.network.image_shape)
    split = config.split or sampling.FALLBACK_SPLITS[0]
    split = sampling.resolve_split(manifest, split, "split", fallback=config.split is None)
    means, log_vars, images = [], [], []
    for batch in codes.batches(
        model, manifest, split, batch_size=config.batch_size, limit=config.max_examples
    ):
        means.append(batch.z_mean.numpy())
        log_vars.append(batch.z_log_var.numpy())
        if sum(len(i) for i in images) < TEST_FACES:
            images.append(to_uint8(batch.images.numpy()))
    z_mean, z_log_var = np.concatenate(means), np.concatenate(log_vars)
    kl = analysis.kl_per_dimension(z_mean, z_log_var)
    test_images = np.concatenate(images)[:TEST_FACES]
    test_codes = z_mean[:TEST_FACES].astype(np.float64)
    vectors, gmm, notes = _train_side(model, config.workdir, manifest, config.batch_size, say)
    if model.mode == "ae":
        notes.insert(0, AE_NOTE)
    return Explorer(model, manifest, config, test_images=test_images, test_codes=test_codes,
                    kl=kl, vectors=vectors, gmm=gmm, notes=notes)  # fmt: skip


def _train_side(
    model: VAE,
    workdir: str,
    manifest: schema.Manifest,
    batch_size: int,
    say: Callable[[str], None],
) -> tuple[dict[str, np.ndarray], priors.GaussianMixture | None, list[str]]:
    """The defined attribute vectors, the mixture prior (None if it cannot be fitted) and
    notes on what is missing."""
    notes: list[str] = []
    if not manifest.has_split("train"):
        return {}, None, ["The dataset has no train split: no attribute sliders, no mixture."]
    labelled = bool(manifest.attribute_names)
    found = None
    vectors_cached = codes.cached_attribute_vectors(model, workdir, manifest, "train")
    if (labelled and vectors_cached is None) or priors.cached_gmm(model, workdir, manifest) is None:
        assert priors.GMM_MAX_CODES == codes.TRAIN_CODES  # one pass serves both
        found = codes.encode_split(model, manifest, "train", batch_size=batch_size,
                                   limit=codes.TRAIN_CODES, with_labels=labelled)  # fmt: skip
    vectors: dict[str, np.ndarray] = {}
    if labelled:
        measured = vectors_cached or codes.attribute_vectors(
            model, workdir, manifest, "train", batch_size=batch_size, codes=found
        )
        for name, vector in zip(measured.names, measured.vectors, strict=True):
            if np.isfinite(vector).all():
                vectors[name] = vector
        undefined = len(measured.names) - len(vectors)
        if undefined:
            notes.append(f"{undefined} attributes have no slider: every training image has "
                         "them, or none does.")  # fmt: skip
    else:
        notes.append("The dataset has no attribute labels, so there are no attribute sliders.")
    try:
        gmm = priors.workdir_gmm(model, workdir, manifest, batch_size=batch_size, codes=found)
    except ValueError as e:
        say(f"explorer: no mixture prior ({short(e, 120)})")
        notes.append("The mixture prior could not be fitted; random faces come from N(0, I).")
        gmm = None
    return vectors, gmm, notes


# --------------------------------------------------------------------------- measuring, serving


def latency(explorer: Explorer, changes: int = 50, seed: int = 0) -> dict[str, float]:
    """Seconds from a slider change to the new face through `Explorer.image` (what the page
    calls), over `changes` random slider changes: median, p95 and max. A measurement."""
    rng = np.random.default_rng(seed)
    session, values = explorer.new_session(), explorer.defaults()
    explorer.image(session, values)  # the first call traces the decoder
    times = []
    for _ in range(changes):
        i = int(rng.integers(len(values)))
        slider = explorer.sliders[i]
        values[i] = float(rng.uniform(slider.minimum, slider.maximum))
        start = time.perf_counter()
        explorer.image(session, values)
        times.append(time.perf_counter() - start)
    return {
        "median_s": float(np.median(times)),
        "p95_s": float(np.percentile(times, 95)),
        "max_s": float(np.max(times)),
    }


def _check_free(host: str, port: int) -> None:
    """ExplorerError unless `host`:`port` can be bound now (Gradio binds it again later)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(infos[0][4])
    except OSError as e:
        reason = getattr(e, "strerror", None) or short(e, 80)
        raise ExplorerError(
            f"cannot serve on {short(host, 40)}:{port} ({reason}): choose another `port`, or a "
            "`host` of this machine"
        ) from None


def serve(config: ExploreConfig, on_ready: Callable[[str], None] | None = None) -> None:
    """Opens the explorer and serves its page on `host`:`port` until Ctrl-C, which closes the
    server and is raised on (KeyboardInterrupt). `on_ready(url)` once it serves (default:
    print it). ExplorerError when Gradio is not installed (naming the install command)."""
    try:
        from facevae.model import explorer_ui
    except ImportError as e:
        raise ExplorerError(f"the explorer needs Gradio ({short(e, 60)}): `{INSTALL}`") from None
    _check_free(config.host, config.port)  # before the minutes a first start may take
    explorer = open_explorer(config)
    server = explorer_ui.launch(explorer, config.host, config.port)
    try:
        (on_ready or (lambda url: print(url, flush=True)))(server.url)
        while True:
            time.sleep(1.0)
    finally:
        server.close()
