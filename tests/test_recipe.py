"""pipeline/recipe.py: crop boxes, landmarks, limits and the conversion of odd image modes."""

import numpy as np
import pytest
from fake_celeba import encoded, image_of, read_split
from PIL import Image

from facevae.pipeline import recipe, schema, sources
from facevae.pipeline.prepare import auto_examples_per_shard, prepare


def test_crop_box_landmarks_and_shard_size():
    assert recipe.crop_box("center", 178, 218) == (0, 20, 178, 198)
    assert recipe.crop_box("none", 50, 40) == (0, 0, 50, 40)
    assert recipe.crop_box((1, 2, 3, 4), 9, 9) == (1, 2, 3, 4)
    assert recipe.move_landmarks([10, 30, 178, 218], (0, 40, 178, 218), 89) == [5, -5, 89, 89]
    assert recipe.parse_crop("0, 40,178,218") == (0, 40, 178, 218)
    assert recipe.parse_crop("Center") == "center" and recipe.parse_crop("auto") == "auto"
    assert recipe.resolve_crop("auto", "official") == recipe.resolve_crop("auto", "kaggle")
    assert recipe.resolve_crop("auto", "kaggle") == schema.CELEBA_CROP
    assert recipe.resolve_crop("auto", "folder") == "center"
    assert recipe.resolve_crop("none", "folder") == "none"
    with pytest.raises(ValueError, match="`crop`"):
        recipe.parse_crop("0,40,178")
    with pytest.raises(ValueError, match="crop box"):
        recipe.Recipe(crop=(10, 0, 5, 5))
    with pytest.raises(ValueError, match="crop box"):
        recipe.parse_crop("10,0,5,5")  # the text is checked as the recipe checks a box
    assert auto_examples_per_shard(recipe.Recipe()) == 4096
    assert auto_examples_per_shard(recipe.Recipe(fmt="raw")) == 512


def test_settings_out_of_range_are_named_in_one_line():
    with pytest.raises(ValueError, match=r"`size` must be in 1\.\.1024, got 100000"):
        recipe.Recipe(size=100_000)
    with pytest.raises(ValueError, match=r"`max_file_mb` must be in 1\.\.200, got 0"):
        recipe.Limits(max_file_mb=0)
    with pytest.raises(ValueError, match=r"`max_megapixels` must be in 1\.\.100, got 101"):
        recipe.Limits(max_megapixels=101)
    long = "x" * 500
    with pytest.raises(ValueError) as error:
        recipe.parse_crop(long)
    assert len(str(error.value)) < 200  # a bad value is quoted, not echoed whole


def _gradient_16bit() -> np.ndarray:
    return np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (32, 1))  # (32, 64)


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = _gradient_16bit()
    src = tmp_path / "photos"
    src.mkdir()
    (src / "gradient.png").write_bytes(encoded(Image.fromarray(values), "PNG"))  # I;16 on read
    manifest = prepare(
        str(src),
        str(tmp_path / "out"),
        size=32,
        fmt="raw",
        split_fractions=(1, 0, 0),
        workers=1,
        verbose=False,
    )
    assert manifest.crop == "center" and manifest.raw["skipped"] == []
    (record,) = read_split(manifest, "train")
    image = image_of(record).astype(int)  # (32, 32, 3)
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all()
    expected = np.asarray(
        Image.fromarray((values[:, 16:48] / 257).round().astype(np.uint8)).resize(
            (32, 32), Image.LANCZOS
        )
    )
    assert np.abs(image[..., 0] - expected).max() <= 1  # clipping made ~all of it 255
    assert image.mean() == pytest.approx(127.5, abs=3)


def test_32_bit_grayscale_is_scaled_by_its_known_range_or_skipped():
    settings = recipe.Recipe(size=16, crop="none", fmt="raw")

    def gray(values: np.ndarray) -> np.ndarray:
        payload, _ = recipe.transform(encoded(Image.fromarray(values), "TIFF"), settings)
        return np.frombuffer(payload, np.uint8).reshape(16, 16, 3)[..., 0]

    sixteen = np.tile(np.linspace(0, 65535, 16).round(), (16, 1))  # (16, 16)
    expected = (sixteen / 257).round()
    assert np.abs(gray(sixteen.astype(np.int32)) - expected).max() <= 1  # mode I
    assert np.abs(gray((sixteen / 65535).astype(np.float32)) - expected).max() <= 1  # mode F
    with pytest.raises(sources.SkipError, match=r"F grayscale with values 0\.0\.\.2\.0"):
        gray((sixteen / 65535 * 2).astype(np.float32))
    with pytest.raises(sources.SkipError, match="no known range"):
        gray(sixteen.astype(np.int32) - 100)
