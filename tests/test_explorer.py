"""model/explorer.py in-process on two tiny runs (vae, ae) trained here, then its page in a real
headless Chromium (Playwright driving Debian's `chromium`), and sample.py --mode explore under
Ctrl-C.

The browser tests skip with one line when gradio, playwright or chromium is missing. Set
FACEVAE_SCREENSHOT=docs/explorer.png to keep the page's screenshot there (else it goes to a
temporary folder), and FACEVAE_EXPLORE_WORKDIR=<a run> to point the browser test at a real run
instead of the tiny one. Timings are printed (pytest -s), never asserted.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib

import numpy as np
import pytest
from PIL import Image

from facevae.model import analysis, console, explorer
from facevae.model.config import TrainConfig
from facevae.model.trainer import train_and_evaluate
from facevae.pipeline import recipe, schema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = os.environ.get("FACEVAE_CHROMIUM", "/usr/bin/chromium")
# The machine's closed network otherwise stalls Chromium on its background requests.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _browser_missing() -> str | None:
    if importlib.util.find_spec("gradio") is None:
        return f"gradio is not installed ({explorer.INSTALL})"
    if importlib.util.find_spec("playwright") is None:
        return f"playwright is not installed ({explorer.INSTALL})"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no chromium at {CHROMIUM} (apt-get install -y chromium)"
    return None


needs_gradio = pytest.mark.skipif(
    importlib.util.find_spec("gradio") is None,
    reason=f"gradio is not installed ({explorer.INSTALL})",
)
needs_browser = pytest.mark.skipif(_browser_missing() is not None, reason=str(_browser_missing()))


@pytest.fixture(scope="module")
def runs(tiny_data_dir, tmp_path_factory) -> dict[str, str]:
    """A tiny vae run and a tiny ae run: 2 steps of 8 images each."""
    root = tmp_path_factory.mktemp("explorer")
    made = {}
    for mode in ("vae", "ae"):
        made[mode] = str(root / mode)
        config = TrainConfig(data_dir=tiny_data_dir, z_dim=8, filters=(8, 16), batch_size=8,
                             epochs=1, steps_per_epoch=2, log_every_steps=1000,
                             mode=mode)  # fmt: skip
        train_and_evaluate(config, made[mode])
    return made


@pytest.fixture(scope="module")
def explorers(runs) -> dict[str, explorer.Explorer]:
    quiet = contextlib.redirect_stderr(io.StringIO())
    with quiet:
        return {
            mode: explorer.open_explorer(explorer.ExploreConfig(workdir=path))
            for mode, path in runs.items()
        }


@pytest.fixture
def vae(explorers) -> explorer.Explorer:
    return explorers["vae"]


def values_with(ex: explorer.Explorer, **changes: float) -> list[float]:
    """The default slider values with some changed, by key ("attr:Smiling", "walk", ...)."""
    values = ex.defaults()
    keys = [s.key for s in ex.sliders]
    for key, value in changes.items():
        values[keys.index(key.replace("__", ":"))] = value
    return values


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height and that holds no pixels (an IDAT chunk
    of 2 bytes): PIL reads its size, and decoding it fails; a limit must refuse it from the
    header alone."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"\x78\x9c")


# --------------------------------------------------------------------------- the library


def test_sliders_and_defaults_show_the_face_itself(vae):
    keys = [s.key for s in vae.sliders]
    assert keys[:2] == ["temperature", "walk"]
    dims = [k for k in keys if k.startswith("dim:")]
    assert len(dims) == 8 and vae.dims == [int(k[4:]) for k in dims]
    assert list(vae.kl[vae.dims]) == sorted(vae.kl, reverse=True)  # most KL first
    assert [k[5:] for k in keys if k.startswith("attr:")] == list(vae.vectors)
    assert vae.vectors  # the tiny dataset has labels
    session = vae.new_session()
    np.testing.assert_array_equal(vae.latent(session, vae.defaults()), vae.test_codes[0])
    image = vae.image(session, vae.defaults())
    assert image.dtype == np.uint8 and image.shape == (32 * 12, 32 * 12, 3)  # ~DISPLAY_SIDE
    np.testing.assert_array_equal(image[::12, ::12], vae.decode(vae.test_codes[:1])[0])


def test_attribute_slider_moves_the_code_along_its_vector(vae):
    session = vae.new_session()
    name = next(iter(vae.vectors))
    base = vae.latent(session, vae.defaults())
    for strength in (-2.5, 0.7, 3.0):
        moved = vae.latent(session, values_with(vae, **{f"attr__{name}": strength}))
        np.testing.assert_allclose(moved - base, strength * vae.vectors[name], atol=1e-12)
    assert not np.array_equal(
        vae.image(session, values_with(vae, **{f"attr__{name}": 3.0})),
        vae.image(session, vae.defaults()),
    )


def test_dimension_slider_shifts_that_dimension_only(vae):
    session = vae.new_session()
    d = vae.dims[0]
    shift = vae.latent(session, values_with(vae, **{f"dim__{d}": -1.5})) - vae.latent(
        session, vae.defaults()
    )
    expected = np.zeros(vae.z_dim)
    expected[d] = -1.5
    np.testing.assert_allclose(shift, expected, atol=1e-12)


def test_walk_is_spherical_and_ends_at_the_endpoints(vae):
    session = vae.new_session()
    a, b = session.face.code(1.0), session.target.code(1.0)
    np.testing.assert_array_equal(vae.latent(session, values_with(vae, walk=0.0)), a)
    np.testing.assert_array_equal(vae.latent(session, values_with(vae, walk=1.0)), b)
    half = vae.latent(session, values_with(vae, walk=0.5))
    np.testing.assert_allclose(half, analysis.slerp(a, b, np.array([0.5]))[0])
    np.testing.assert_array_equal(
        vae.image(session, values_with(vae, walk=1.0)), vae.enlarge(vae.decode(b[None])[0])
    )
    session = vae.random_target(session, "gmm")  # any target: still exact at the end
    np.testing.assert_array_equal(
        vae.latent(session, values_with(vae, walk=1.0, temperature=0.5)),
        session.target.code(0.5),
    )


def test_random_faces_temperature_and_priors(vae):
    session = vae.new_session()
    first = vae.random_face(session, "normal")
    again = vae.random_face(session, "normal")
    np.testing.assert_array_equal(first.face.spread, again.face.spread)  # seeded
    assert first.draws == 1 and not np.array_equal(
        vae.random_face(first, "normal").face.spread, first.face.spread
    )
    assert not first.face.centre.any()  # N(0, T^2 I): all noise
    for t in (0.0, 0.5, 2.0):
        z = vae.latent(first, values_with(vae, temperature=t))
        np.testing.assert_allclose(z, t * first.face.spread)
    gmm = vae.random_face(session, "gmm").face
    assert any(np.allclose(gmm.centre, mean) for mean in vae.gmm.means)  # a component's mean
    test = vae.next_test_face(session)  # an encoded face keeps its code at any temperature
    np.testing.assert_array_equal(
        vae.latent(test, values_with(vae, temperature=2.0)), test.face.centre
    )
    assert test.face.label == "test image 2" and vae.original(test).shape == (32 * 6,) * 2 + (3,)
    with pytest.raises(explorer.ExplorerError, match="prior"):
        vae.random_face(session, "uniform")


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"temperature": 2.5}, r"temperature \(random faces\): 2\.5 is outside 0\.\.2"),
        ({"walk": -0.1}, r"walk .*: -0\.1 is outside 0\.\.1"),
        ({"walk": float("nan")}, "nan is outside"),
        ({"temperature": float("inf")}, "inf is outside"),
        ({"walk": True}, "True is outside"),
        ({"walk": "0.5"}, "0.5 is outside"),
        ({"walk": None}, "None is outside"),
        ({"dim": 1e300}, r"1e\+300 is outside -3\.\.3"),
        ({"walk": 10**400}, "is outside 0..1"),  # a JSON integer no float holds
        ({"walk": [0.5]}, r"\[0\.5\] is outside"),
    ],
)
def test_values_out_of_range_are_refused_naming_the_slider(vae, change, expected):
    if "dim" in change:
        change = {f"dim__{vae.dims[0]}": change.pop("dim")}
    with pytest.raises(explorer.ExplorerError, match=expected):
        vae.image(vae.new_session(), values_with(vae, **change))


def test_a_wrong_number_of_values_is_refused(vae):
    with pytest.raises(explorer.ExplorerError, match="reload the page"):
        vae.latent(vae.new_session(), vae.defaults()[:-1])


def test_upload_goes_through_the_datasets_crop_and_resize(vae, tiny_manifest):
    assert tiny_manifest.crop == list(schema.CELEBA_CROP)  # the synthetic CelebA layout
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (218, 178, 3), np.uint8)  # an aligned CelebA-sized image
    data = png_bytes(photo)
    image = explorer.upload_image(data, tiny_manifest, vae.image_shape)
    how = recipe.Recipe(size=32, crop=schema.CELEBA_CROP, resample=tiny_manifest.resample,
                        fmt="raw")  # fmt: skip
    expected = np.frombuffer(recipe.transform(data, how)[0], np.uint8).reshape(32, 32, 3)
    np.testing.assert_array_equal(image, expected)
    wide = png_bytes(rng.integers(0, 256, (300, 400, 3), np.uint8))  # another photo: centred
    centred = recipe.Recipe(size=32, crop="center", resample=tiny_manifest.resample, fmt="raw")
    np.testing.assert_array_equal(
        explorer.upload_image(wide, tiny_manifest, vae.image_shape),
        np.frombuffer(recipe.transform(wide, centred)[0], np.uint8).reshape(32, 32, 3),
    )
    session = vae.upload(vae.new_session(), png_bytes(vae.test_images[3]))
    assert session.face.label == "your upload"
    np.testing.assert_array_equal(session.face.original, vae.test_images[3])  # 32x32: kept
    np.testing.assert_allclose(session.face.centre, vae.test_codes[3], atol=1e-4)
    assert vae.image(session, vae.defaults()).shape == (384, 384, 3)


def test_upload_limits_are_checked_before_decoding(vae, tiny_manifest, monkeypatch):
    def upload(data):
        return explorer.upload_image(data, tiny_manifest, vae.image_shape)

    decoded = []
    monkeypatch.setattr(recipe, "_decode_crop_encode", lambda *a: decoded.append(a))
    with pytest.raises(explorer.ExplorerError, match="not an image PIL can read"):
        upload(b"%PDF-1.4 not an image at all")
    with pytest.raises(explorer.ExplorerError, match="empty"):
        upload(b"")
    with pytest.raises(explorer.ExplorerError, match=r"20\.0 MB, more than the 20 MB"):
        upload(png_header(10, 10) + bytes(20 * 2**20 + 1 - len(png_header(10, 10))))
    with pytest.raises(explorer.ExplorerError, match="8000x6000 pixels, more than 40 mega"):
        upload(png_header(8000, 6000))  # 48 MP declared in 33 bytes
    with pytest.raises(explorer.ExplorerError, match="more than 40 megapixels"):
        upload(png_header(30000, 30000))  # past PIL's own bomb limit
    assert decoded == []  # none of them reached the decoder
    monkeypatch.undo()
    with pytest.raises(explorer.ExplorerError, match="cannot be used: not a readable image"):
        upload(png_header(100, 100))  # a header and no pixels: refused when decoding
    session = vae.new_session()
    with pytest.raises(explorer.ExplorerError):
        vae.upload(session, b"GIF89a")  # the session is left as it was


def test_autoencoder_run_says_why_n01_fails_and_keeps_the_mixture(explorers):
    ae = explorers["ae"]
    assert ae.run_mode == "ae" and "plain autoencoder" in ae.summary()
    assert "mixture prior" in ae.summary() and "plain autoencoder" not in explorers["vae"].summary()
    assert ae.priors == ("normal", "gmm")
    for prior in ae.priors:
        session = ae.random_face(ae.new_session(), prior)
        assert ae.image(session, ae.defaults()).shape == (384, 384, 3)


def test_config_refuses_bad_settings_naming_them():
    for changes, expected in [
        ({"port": 0}, r"`port` must be in 1\.\.65535"),
        ({"port": 70000}, "`port`"),
        ({"temperature": 0.0}, r"`temperature` must be in \(0, 2\]"),
        ({"temperature": float("nan")}, "`temperature`"),
        ({"num_dims": 0}, "`num_dims`"),
        ({"host": "a b"}, "`host`"),
        ({"workdir": ""}, "`workdir` is needed"),
    ]:
        with pytest.raises(explorer.ExplorerError, match=expected):
            explorer.ExploreConfig(**{"workdir": "runs/x", **changes})


def test_missing_gradio_is_one_line_with_the_install_command(monkeypatch, runs):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio fails
    monkeypatch.delitem(sys.modules, "facevae.model.explorer_ui", raising=False)
    with pytest.raises(explorer.ExplorerError) as caught:
        explorer.serve(explorer.ExploreConfig(workdir=runs["vae"]))
    line = console.one_line(caught.value, "sample.py: ")
    assert "\n" not in line and line.endswith('`pip install -e ".[explore]"`')


@needs_gradio
def test_a_port_in_use_is_refused_before_any_work(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = explorer.ExploreConfig(workdir=str(tmp_path / "no_run"), port=port)
        with pytest.raises(explorer.ExplorerError, match=f"cannot serve on 127.0.0.1:{port}"):
            explorer.serve(config)  # not a run either: the port is checked first


def test_latency_through_the_library(vae):
    timings = explorer.latency(vae, changes=50)
    print(f"\nexplorer latency, library: median {timings['median_s'] * 1e3:.1f} ms, "
          f"p95 {timings['p95_s'] * 1e3:.1f} ms")  # fmt: skip
    assert set(timings) == {"median_s", "p95_s", "max_s"}


# --------------------------------------------------------------------------- the page


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, api: str, data: list) -> tuple[str, str]:
    """A hand-made request to the page's API, as any client could send: (event, data)."""
    body = json.dumps({"data": data}).encode()  # NaN stays NaN, as Python's json writes it
    request = urllib.request.Request(
        f"{url}gradio_api/call/{api}", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        event_id = json.load(response)["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call/{api}/{event_id}", timeout=30) as response:
        lines = response.read().decode().splitlines()
    events = [line[7:] for line in lines if line.startswith("event: ")]
    payloads = [line[6:] for line in lines if line.startswith("data: ")]
    return events[-1], payloads[-1]


@pytest.fixture(scope="module")
def page_explorer(explorers):
    """The tiny vae run's explorer, or FACEVAE_EXPLORE_WORKDIR's (a real run, for the README's
    screenshot)."""
    workdir = os.environ.get("FACEVAE_EXPLORE_WORKDIR")
    if not workdir:
        return explorers["vae"]
    return explorer.open_explorer(explorer.ExploreConfig(workdir=workdir))


@needs_browser
def test_page_in_a_real_browser(page_explorer, tmp_path):
    from playwright.sync_api import sync_playwright

    from facevae.model import explorer_ui

    started = time.perf_counter()
    server = explorer_ui.launch(page_explorer, "127.0.0.1", free_port())
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
                args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 860},
            )  # fmt: skip
            try:
                _drive_the_page(browser.new_page(), server.url, page_explorer, tmp_path)
            finally:
                browser.close()
    finally:
        server.close()
    print(f"browser test: {time.perf_counter() - started:.1f} s")


def _face_src(page) -> str:
    return page.get_attribute("#face img", "src") or ""


def _move(page, slider_id: str, value: float) -> float:
    """Moves a slider as a user does; seconds until the new face is in the page."""
    before = _face_src(page)
    start = time.perf_counter()
    page.locator(f"#{slider_id} input[type=range]").fill(f"{value:g}")
    page.wait_for_function(
        "before => { const img = document.querySelector('#face img');"
        " return img && img.src !== before && img.complete; }",
        arg=before,
        timeout=15_000,
    )
    return time.perf_counter() - start


def _drive_the_page(page, url: str, ex: explorer.Explorer, tmp_path) -> None:
    page.goto(url)
    page.wait_for_selector("#face img")
    assert ex.run_mode in page.inner_text("#summary")
    dim = f"slider-dim-{ex.dims[0]}"
    before = page.locator("#face img").screenshot()
    _move(page, dim, 2.5)
    assert page.locator("#face img").screenshot() != before  # the face changed
    times = [_move(page, dim, v) for v in (-2.0, 1.0, -1.0, 2.0, -2.5, 0.5, 3.0, -3.0)]
    print(f"\nexplorer latency, page: median {np.median(times) * 1e3:.0f} ms, "
          f"p95 {np.percentile(times, 95) * 1e3:.0f} ms over {len(times)} changes")  # fmt: skip

    # A hand-made request with a value no slider can send: refused in the status, not fatal.
    sliders = ex.defaults()
    event, data = call(url, "redraw", [*sliders[:1], float("nan"), *sliders[2:]])
    assert "Refused" in data and "outside 0..1" in data, (event, data)
    event, data = call(url, "redraw", [99.0, *sliders[1:]])
    assert "Refused" in data and "99.0 is outside 0..2" in data, (event, data)
    event, data = call(url, "redraw", [{"path": "/etc/passwd"}, *sliders[1:]])
    assert "Refused" in data and "is outside 0..2" in data, (event, data)  # not a path
    event, data = call(url, "random_face", ["uniform", *sliders])
    assert "Refused" in data and "use one of" in data, (event, data)
    event, data = call(url, "redraw", sliders)
    assert event == "complete", (event, data)  # still serving

    # A file that is not an image: the page says so and goes on.
    page.locator("#upload input[type=file]").set_input_files(
        {"name": "notes.png", "mimeType": "image/png", "buffer": b"these are notes, not pixels"}
    )
    page.wait_for_function(
        "() => document.querySelector('#status').innerText.includes('not an image')",
        timeout=15_000,
    )
    assert "Refused" in page.inner_text("#status")
    _move(page, dim, 0.0)  # still drawing
    photo = png_bytes(ex.test_images[-1])  # a photo: cropped, resized, encoded, shown
    page.locator("#upload input[type=file]").set_input_files(
        {"name": "me.png", "mimeType": "image/png", "buffer": photo}
    )
    page.wait_for_function(
        "() => document.querySelector('#caption').innerText.includes('your upload')",
        timeout=15_000,
    )
    page.click("#reset")
    page.wait_for_function(
        "() => !document.querySelector('#status').innerText.includes('Refused')", timeout=15_000
    )
    page.click("#random-face")
    page.wait_for_function(
        "() => document.querySelector('#caption').innerText.includes('random face 0')",
        timeout=15_000,
    )
    page.click("#test-face")
    page.wait_for_function(
        "() => document.querySelector('#caption').innerText.includes('test image')",
        timeout=15_000,
    )
    attribute = "Eyeglasses" if "Eyeglasses" in ex.vectors else next(iter(ex.vectors))
    _move(page, f"slider-attr-{attribute}", 2.0)  # an edit to show
    target = os.environ.get("FACEVAE_SCREENSHOT") or str(tmp_path / "explorer.png")
    _screenshot(page, target)


def _screenshot(page, path: str) -> None:
    """The viewport as an 8-bit palette PNG: the page is flat colours and a face, and the
    README's copy stays small."""
    page.evaluate("() => window.scrollTo(0, 0)")
    shot = Image.open(io.BytesIO(page.screenshot()))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    shot.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
        path, optimize=True
    )
    print(f"screenshot: {path} ({os.path.getsize(path) / 1024:.0f} KB)")


# --------------------------------------------------------------------------- the command line


def _read_lines(stream, lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


@needs_gradio
def test_command_line_serves_until_ctrl_c(runs):
    port = free_port()
    command = [sys.executable, "sample.py", "--mode", "explore", "--workdir", runs["vae"],
               "--port", str(port)]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    out, err = [], []
    readers = [threading.Thread(target=_read_lines, args=(s, lines), daemon=True)
               for s, lines in ((process.stdout, out), (process.stderr, err))]  # fmt: skip
    for reader in readers:
        reader.start()
    try:
        deadline = time.monotonic() + 120
        while not out and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert out, "".join(err)[-2000:]
        url = out[0].strip()
        assert url == f"http://127.0.0.1:{port}/"
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    for reader in readers:
        reader.join(timeout=10)
    stderr = "".join(err)
    assert code in (0, 130), stderr[-2000:]
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1] == "sample.py: explorer stopped (Ctrl-C)"


def test_command_line_refuses_a_bad_port_in_one_line(runs):
    done = subprocess.run(
        [sys.executable, "sample.py", "--mode", "explore", "--workdir", runs["vae"], "--port",
         "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("sample.py: --port must be in 1..65535"), done.stderr[-2000:]
