"""Image preprocessing, the cross-domain loader and the evaluation batches."""

import json

import numpy as np
import pytest
from skimage import color
from skimage import transform

from xdomain import data
from xdomain.data import domains
from xdomain.data import loader as loader_lib



def _loader(data_dir, **overrides):
  kwargs = dict(batch_size=32, preprocess=data.ImagePreprocess(augment=True), seed=7,
                data_dir=data_dir, process_index=0, process_count=1)
  kwargs.update(overrides)
  source = kwargs.pop("source", "digits/uci")
  target = kwargs.pop("target", "digits/mnist_m")
  return data.CrossDomainLoader(source, target, **kwargs)


def _take(loader, n):
  return [next(loader) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for part in x:
      assert x[part].keys() == y[part].keys()
      for key in x[part]:
        np.testing.assert_array_equal(x[part][key], y[part][key])


# Preprocessing.


@pytest.mark.parametrize("size,channels,normalize", [
    ((28, 28), 3, "unit"), ((8, 8), 1, "standardize"), ((32, 32), 1, "unit")])
def test_prepare_shapes_dtypes_and_values(size, channels, normalize):
  rng = np.random.default_rng(0)
  grey = rng.integers(0, 256, size=(5, 28, 28, 1), dtype=np.uint8)
  rgb = rng.integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
  pre = data.ImagePreprocess(size=size, channels=channels, normalize=normalize)
  for images in (grey, rgb):
    out = pre.prepare({"image": images, "label": np.arange(5)})
    assert out["image"].shape == (5, *size, channels) and out["image"].dtype == np.float32
    np.testing.assert_array_equal(out["label"], np.arange(5))
    # Reference: one image at a time with skimage.
    ref = images[2].astype(np.float64) / 255
    if ref.shape[:2] != size:
      ref = transform.resize(ref, (*size, ref.shape[-1]), order=1,
                             anti_aliasing=ref.shape[0] > size[0])
    if ref.shape[-1] == 3 and channels == 1:
      ref = color.rgb2gray(ref)[..., None]
    elif ref.shape[-1] == 1 and channels == 3:
      ref = np.repeat(ref, 3, axis=-1)
    if normalize == "standardize":
      ref = (ref - ref.mean()) / max(ref.std(), 1 / np.sqrt(ref.size))
      assert np.allclose(out["image"].mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out["image"][2], ref, atol=1e-4)


def test_prepare_rejects_bad_input():
  pre = data.ImagePreprocess()
  with pytest.raises(ValueError, match=r"data\['image'\] must be uint8\[n, h, w, 1 or 3\], got float32\[4, 28, 28\]"):
    pre.prepare({"image": np.zeros((4, 28, 28), np.float32)})
  with pytest.raises(ValueError, match="channels must be 1 or 3, got 2"):
    data.ImagePreprocess(channels=2)
  with pytest.raises(ValueError, match="normalize must be one of"):
    data.ImagePreprocess(normalize="minmax")


def test_augmentation_translates_each_image():
  pre = data.ImagePreprocess(size=(6, 7), augment=True, max_shift=2)
  images = np.random.default_rng(1).random((3, 6, 7, 1)).astype(np.float32)
  shifts = np.array([[0, 0], [2, -1], [-2, 1]])
  out = pre.apply_augmentation({"image": images}, shifts)["image"]
  for image, moved, (dy, dx) in zip(images, out, shifts):
    rows = np.clip(np.arange(6) - dy, 0, 5)  # border pixels repeat
    cols = np.clip(np.arange(7) - dx, 0, 6)
    np.testing.assert_array_equal(moved, image[rows][:, cols])
  params = pre.sample_augmentation(np.random.default_rng(0), 100)
  assert params.shape == (100, 2) and params.min() == -2 and params.max() == 2
  assert data.ImagePreprocess(augment=False).sample_augmentation(np.random.default_rng(0), 4) is None


# The cross-domain loader.


def test_batches_have_the_right_shapes_and_no_target_labels(data_dir):
  loader = _loader(data_dir, preprocess=data.ImagePreprocess(size=(16, 16), channels=3))
  for batch in _take(loader, 3):
    assert set(batch) == {"source", "target"}
    assert set(batch["source"]) == {"image", "label"}
    assert set(batch["target"]) == {"image"}  # labels never reach a training batch
    assert batch["source"]["image"].shape == batch["target"]["image"].shape == (32, 16, 16, 3)
    assert batch["source"]["image"].dtype == batch["target"]["image"].dtype == np.float32
    assert batch["source"]["label"].dtype == np.int32
    assert set(batch["source"]["label"]) <= set(range(10))


def test_same_seed_same_stream_other_seed_other_stream(data_dir):
  a, b, c = (_take(_loader(data_dir, seed=s), 3) for s in (7, 7, 8))
  _assert_batches_equal(a, b)
  assert not np.array_equal(a[0]["source"]["image"], c[0]["source"]["image"])
  # The two domains are shuffled with different seeds, not in lockstep.
  same = _take(_loader(data_dir, source="digits/uci", target="digits/uci"), 1)[0]
  assert not np.array_equal(same["source"]["image"], same["target"]["image"])


def test_epochs_cover_the_domain_and_are_reshuffled(data_dir):
  n = data.domain_info("digits/uci").split_sizes["test"]
  pre = data.ImagePreprocess(size=(8, 8))
  reference = pre.prepare(data.load_domain("digits/uci", "test", data_dir=data_dir))
  loader = _loader(data_dir, batch_size=n, preprocess=pre, source_split="test",
                   target="digits/mnist", target_split="test")
  first, second = (batch["source"] for batch in _take(loader, 2))
  key = lambda a: sorted(row.tobytes() for row in a)
  for epoch in (first, second):  # each batch here is one whole epoch
    assert key(epoch["image"]) == key(reference["image"])
    np.testing.assert_array_equal(np.sort(epoch["label"]), np.sort(reference["label"]))
  assert not np.array_equal(first["label"], second["label"])


@pytest.mark.parametrize("n, seed", [(10, 3), (7, 2**32 - 2)])  # last: the epoch seed wraps
def test_row_order_is_grains_shuffled_repeated_stream(n, seed):
  # The order every table was made with: grain's per-epoch shuffle, computed
  # directly. Batches of 4 straddle the epochs of 7 and 10 rows.
  import grain

  reference = grain.MapDataset.range(n).shuffle(seed=seed).repeat().batch(4)
  stream = loader_lib._index_stream(n, seed, 4)
  for step in range(12):
    np.testing.assert_array_equal(stream(step), reference[step])
  lengths = np.array([5, 1, 4, 1, 3, 9, 2, 6, 5, 3][:n])
  grouped = loader_lib._length_grouped_stream(lengths, seed, 2, 2, order_seed=1)
  for step in range(0, 12, 2):  # a window of 2 batches holds reference batch step // 2
    window = np.concatenate([grouped(step), grouped(step + 1)])
    np.testing.assert_array_equal(np.sort(window), np.sort(reference[step // 2]))
    shorter, longer = sorted((grouped(step), grouped(step + 1)), key=lambda b: lengths[b].min())
    assert lengths[shorter].max() <= lengths[longer].min()


def test_restored_loader_continues_the_stream(data_dir):
  unbroken = _loader(data_dir)
  _take(unbroken, 3)
  state = json.loads(json.dumps(unbroken.get_state()))  # as a checkpoint stores it
  expected = _take(unbroken, 3)
  restored = _loader(data_dir)
  next(restored)
  restored.set_state(state)
  _assert_batches_equal(_take(restored, 3), expected)


def test_state_from_another_configuration_is_rejected(data_dir):
  state = _loader(data_dir, seed=7).get_state()
  with pytest.raises(ValueError, match=r"different configuration.*'seed': \(7, 8\)"):
    _loader(data_dir, seed=8).set_state(state)
  with pytest.raises(ValueError, match="keys 'iterator' and 'config'"):
    _loader(data_dir).set_state({"next_index": 3})


def test_process_shards_stack_to_the_single_process_batch(data_dir):
  whole = _take(_loader(data_dir, batch_size=16), 3)
  shards = [_take(_loader(data_dir, batch_size=16, process_index=p, process_count=2), 3)
            for p in range(2)]
  for step, batch in enumerate(whole):
    for part in batch:
      for key in batch[part]:
        halves = [shards[p][step][part][key] for p in range(2)]
        assert halves[0].shape[0] == halves[1].shape[0] == 8
        np.testing.assert_array_equal(np.concatenate(halves), batch[part][key])


def test_loader_argument_errors(data_dir, monkeypatch):
  with pytest.raises(ValueError, match="batch_size=10 .* divisible by process_count=4"):
    _loader(data_dir, batch_size=10, process_index=0, process_count=4)
  with pytest.raises(ValueError, match="process_index=2, process_count=2"):
    _loader(data_dir, process_index=2, process_count=2)
  with pytest.raises(ValueError, match="Unknown split 'val'"):
    _loader(data_dir, target_split="val")
  with pytest.raises(ValueError, match="Unknown domain 'digits/usps'"):
    _loader(data_dir, target="digits/usps")
  letters = domains.DomainInfo(
      name="letters/x", modality="image", task="classification", label_names=("a", "b"),
      image_shape=(8, 8, 1), split_sizes={"train": 1, "test": 1})
  monkeypatch.setitem(domains.DOMAINS, "letters/x", domains.DomainSpec(letters, lambda d: None))
  with pytest.raises(ValueError, match="different label sets"):
    _loader(data_dir, target="letters/x")


# Evaluation batches.


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_batches_cover_every_example_once(data_dir, process_count):
  pre = data.ImagePreprocess(size=(8, 8), augment=True)  # eval never augments
  reference = pre.prepare(data.load_domain("digits/uci", "test", data_dir=data_dir))
  num = data.num_eval_batches("digits/uci", "test", batch_size=100)
  assert num == 4  # 359 examples
  shards = [list(data.eval_batches("digits/uci", "test", batch_size=100, preprocess=pre,
                                   data_dir=data_dir, process_index=p,
                                   process_count=process_count))
            for p in range(process_count)]
  assert all(len(batches) == num for batches in shards)
  images, labels, masks = [], [], []
  for step in range(num):
    for p in range(process_count):
      batch = shards[p][step]
      assert batch["image"].shape == (100 // process_count, 8, 8, 1)
      images.append(batch["image"])
      labels.append(batch["label"])
      masks.append(batch["mask"])
  mask = np.concatenate(masks)
  assert mask.sum() == 359 and not mask[359:].any()
  np.testing.assert_array_equal(np.concatenate(images)[mask], reference["image"])
  np.testing.assert_array_equal(np.concatenate(labels)[mask], reference["label"])


def test_process_defaults_come_from_jax(data_dir):
  import jax  # pylint: disable=g-import-not-at-top
  assert (jax.process_index(), jax.process_count()) == (0, 1)
  pre = data.ImagePreprocess(size=(8, 8))
  default = next(data.eval_batches("digits/uci", "test", batch_size=64, preprocess=pre,
                                   data_dir=data_dir))
  explicit = next(data.eval_batches("digits/uci", "test", batch_size=64, preprocess=pre,
                                    data_dir=data_dir, process_index=0, process_count=1))
  assert default["image"].shape == (64, 8, 8, 1)
  np.testing.assert_array_equal(default["image"], explicit["image"])


def test_source_free_stream_is_the_target_part_alone_with_row_indices(data_dir, monkeypatch):
  plain = data.ImagePreprocess()  # no augmentation: the images are the rows themselves
  with_source = _take(_loader(data_dir, preprocess=plain), 3)
  opened = []
  load = domains.load_domain
  monkeypatch.setattr(domains, "load_domain",
                      lambda name, split, **kw: opened.append(name) or load(name, split, **kw))
  source_free = _take(_loader(data_dir, preprocess=plain, source=None, target_index=True), 3)
  assert opened == ["digits/mnist_m"]  # the source domain is never read
  rows = plain.prepare(load("digits/mnist_m", "train", data_dir=data_dir))
  for a, b in zip(with_source, source_free):
    assert list(b) == ["target"]
    assert sorted(b["target"]) == ["image", "index"]
    # The same target rows in the same order: the two streams are seeded alike.
    np.testing.assert_array_equal(a["target"]["image"], b["target"]["image"])
    assert b["target"]["index"].dtype == np.int32
    np.testing.assert_array_equal(b["target"]["image"], rows["image"][b["target"]["index"]])
