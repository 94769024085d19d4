"""xdomain.models.detection: FCOS outputs, locations and target assignment."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xdomain import methods
from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.methods import METHODS
from xdomain.methods import base
from xdomain.models import detection


def test_locations_follow_the_output_order():
  points, strides, ranges = detection.locations((32, 32))
  assert points.shape == (4 * 4 + 2 * 2, 2)
  np.testing.assert_array_equal(points[:2], [[4, 4], [4, 12]])  # stride 8, row 0
  np.testing.assert_array_equal(points[16], [8, 8])  # first of stride 16
  np.testing.assert_array_equal(strides[[0, 15, 16, 19]], [8, 8, 16, 16])
  assert ranges[0, 1] == detection.SCALE_RANGES[0][1] and np.isinf(ranges[-1, 1])
  with pytest.raises(ValueError, match="multiple of every stride"):
    detection.locations((40, 32))


def test_assign_targets_centre_sampling_scale_and_smallest_box():
  points, strides, ranges = (jnp.asarray(a) for a in detection.locations((64, 64)))
  boxes = jnp.array([[8.0, 8.0, 24.0, 24.0],    # small: level stride 8
                     [0.0, 0.0, 64.0, 64.0],    # large: level stride 16
                     [0.0, 0.0, 0.0, 0.0]])     # padding
  classes = jnp.array([3, 5, -1])
  cls, ltrb = jax.jit(detection.assign_targets)(boxes, classes, points, strides, ranges)
  cls, ltrb = np.asarray(cls), np.asarray(ltrb)
  p = np.asarray(points)
  small = np.flatnonzero(cls == 3)
  # Positives of the small box: stride-8 locations within 1.5 strides of its centre (16, 16).
  assert set(small) == {i for i in range(64) if abs(p[i, 0] - 16) < 12 and abs(p[i, 1] - 16) < 12}
  i = small[0]
  np.testing.assert_allclose(ltrb[i], [p[i, 1] - 8, p[i, 0] - 8, 24 - p[i, 1], 24 - p[i, 0]])
  large = np.flatnonzero(cls == 5)
  assert len(large) and np.all(large >= 64)  # only on the stride-16 level
  assert np.all(np.abs(p[large] - 32) < 24)
  assert -1 in cls and not np.any(np.isin(cls, [0]))  # padding assigns nothing


def test_assign_targets_prefers_the_smaller_box():
  points, strides, _ = (jnp.asarray(a) for a in detection.locations((32, 32)))
  ranges = jnp.tile(jnp.array([[0.0, jnp.inf]]), (points.shape[0], 1))
  boxes = jnp.array([[0.0, 0.0, 32.0, 32.0], [8.0, 8.0, 24.0, 24.0]])
  cls, _ = jax.jit(detection.assign_targets)(boxes, jnp.array([1, 2]), points, strides, ranges)
  centre = int(np.flatnonzero((np.asarray(points) == [12, 12]).all(1))[0])
  assert int(cls[centre]) == 2


def test_fcos_outputs_features_and_submodules():
  model = detection.FCOS(num_classes=4, fpn_width=16)
  images = jnp.zeros((2, 32, 32, 3))
  variables = jax.jit(model.init)(jax.random.key(0), images)
  outputs, features = jax.jit(lambda v, x: model.apply(v, x, return_features=True))(
      variables, images)
  assert outputs.shape == (2, 20, 4 + 5) and features.shape == (2, 20, 16)
  assert {"backbone", "head"} <= set(variables["params"])
  assert np.all(np.asarray(outputs[..., 4:8]) > 0)  # distances are positive
  maps = detection.split_levels(features, (32, 32))
  assert [m.shape for m in maps] == [(2, 4, 4, 16), (2, 2, 2, 16)]
  # Prior: class probabilities start near 0.01.
  np.testing.assert_allclose(jax.nn.sigmoid(outputs[..., :4]).mean(), 0.01, atol=0.01)
  with pytest.raises(ValueError, match="multiple of every stride"):
    model.apply(variables, jnp.zeros((1, 24, 24, 3)))


def test_alignment_features_are_the_maps_at_unit_scale_per_image():
  model = detection.FCOS(num_classes=4, fpn_width=16)
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  variables = model.init(jax.random.key(0), images)
  maps = model.apply(variables, images, method=lambda m, x: m.backbone(x))
  _, features = model.apply(variables, images, return_features=True)
  expected = np.concatenate(
      [(m / np.sqrt(np.mean(np.square(m), axis=(1, 2, 3), keepdims=True))).reshape(2, -1, 16)
       for m in map(np.asarray, maps)], axis=1)
  np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
  # Growing a level's map (what gradient reversal could do for free) moves nothing.
  grown = jax.tree_util.tree_map_with_path(
      lambda path, x: x * 10 if "output_8" in jax.tree_util.keystr(path) else x, variables)
  _, grown_features = model.apply(grown, images, return_features=True)
  np.testing.assert_allclose(grown_features, features, rtol=1e-4, atol=1e-5)


def test_decode_inverts_the_targets():
  points = jnp.array([[10.0, 20.0]])
  ltrb = jnp.array([[[5.0, 2.0, 3.0, 4.0]]])
  np.testing.assert_allclose(detection.decode_boxes(ltrb, points), [[[8.0, 15.0, 14.0, 23.0]]])
  np.testing.assert_allclose(detection.centerness(jnp.array([2.0, 2.0, 2.0, 2.0])), 1.0)


def test_pseudo_objects_keep_confident_boxes_after_nms():
  points, _, _ = detection.locations((32, 32))
  num, k = len(points), 3
  logits = np.full((1, num, k), -9.0, np.float32)
  distances = np.full((1, num, 4), 4.0, np.float32)
  center = np.full((1, num, 1), 9.0, np.float32)
  # Locations 5 and 6 (neighbours, same class 2): boxes overlapping by IoU 1/3
  # (kept both); location 9 (class 1) at the same place as location 5 (kept:
  # another class); location 12 scores below the threshold.
  for location, cls, logit in ((5, 2, 5.0), (6, 2, 4.0), (9, 1, 3.0), (12, 0, -3.0)):
    logits[0, location, cls] = logit
  distances[0, 9] = distances[0, 5] + [0, 8, 0, -8]  # location 9 (8 px lower) draws box 5
  outputs = jnp.asarray(np.concatenate([logits, distances, center], -1))
  objects = np.asarray(jax.jit(lambda o: detection.pseudo_objects(o, threshold=0.5,
                                                                   max_boxes=4))(outputs))
  assert objects.shape == (1, 4, 5)
  np.testing.assert_array_equal(objects[0, :, 4], [2, 2, 1, -1])
  box5 = [points[5, 0] - 4, points[5, 1] - 4, points[5, 0] + 4, points[5, 1] + 4]
  np.testing.assert_allclose(objects[0, 0, :4], box5)
  np.testing.assert_allclose(objects[0, 2, :4], box5)
  # Same class, IoU above the threshold: the weaker one is suppressed.
  distances[0, 6] = distances[0, 5] + [8, 0, -8, 0]  # location 6 (8 px right) draws box 5
  outputs = jnp.asarray(np.concatenate([logits, distances, center], -1))
  objects = np.asarray(detection.pseudo_objects(outputs, threshold=0.5, max_boxes=4))
  np.testing.assert_array_equal(objects[0, :, 4], [2, 1, -1, -1])


def _teacher_with_boxes(rows):
  """Teacher outputs on 2 images of 32x32: `rows` of (image, location, class, logit)."""
  points, _, _ = detection.locations((32, 32))
  logits = np.full((2, len(points), 3), -9.0, np.float32)
  for image, location, cls, logit in rows:
    logits[image, location, cls] = logit
  rest = np.concatenate([np.full((2, len(points), 4), 2.0, np.float32),
                         np.full((2, len(points), 1), 9.0, np.float32)], -1)
  return jnp.asarray(np.concatenate([logits, rest], -1))


def _pseudo_box_term(method, student, teacher):
  outputs = base.Outputs(source_logits=None, source_features=None, source_labels=None,
                         source_mask=None, target_logits=student, teacher_target_logits=teacher)
  return method.terms(outputs, None, jax.random.key(0), 0)


def test_mean_teacher_logs_its_pseudo_boxes_per_image_at_weight_zero():
  # Image 0: two confident boxes far apart; image 1: none.
  teacher = _teacher_with_boxes([(0, 3, 1, 5.0), (0, 17, 2, 5.0)])
  method = METHODS["detection_mean_teacher"](Config(method="detection_mean_teacher"))
  terms = _pseudo_box_term(method, teacher, teacher)
  assert float(terms["pseudo_boxes_per_image"]) == 1.0  # (2 + 0) / 2
  assert method.weights["pseudo_boxes_per_image"] == 0.0


def test_mean_teacher_leaves_images_without_pseudo_boxes_out():
  # Image 0: two confident boxes; image 1: none.
  teacher = _teacher_with_boxes([(0, 3, 1, 5.0), (0, 17, 2, 5.0)])
  student = jnp.asarray(np.random.default_rng(0).normal(size=teacher.shape), jnp.float32)
  method = METHODS["detection_mean_teacher"](Config(method="detection_mean_teacher"))
  term = lambda s: _pseudo_box_term(method, s, teacher)["pseudo_boxes"]

  alone = detection.fcos_loss(student[:1], detection.pseudo_objects(teacher[:1], threshold=0.5))
  np.testing.assert_allclose(term(student), alone["focal"] + alone["giou"] + alone["centerness"],
                             rtol=1e-6)
  gradient = np.asarray(jax.grad(term)(student))
  assert np.abs(gradient[0]).max() > 0 and not gradient[1].any()


def test_fcos_loss_of_kept_images_is_the_loss_of_those_images_alone():
  rng = np.random.default_rng(1)
  points, _, _ = detection.locations((32, 32))
  outputs = jnp.asarray(rng.normal(size=(3, len(points), 3 + 5)), jnp.float32)
  objects = np.full((3, 2, 5), -1.0, np.float32)
  objects[0, 0] = [2, 2, 14, 14, 1]
  objects[1, 0] = [16, 14, 30, 30, 0]
  objects[2, :] = [[4, 4, 20, 12, 2], [18, 18, 30, 30, 1]]
  kept = detection.fcos_loss(outputs, objects, images=jnp.array([True, False, True]))
  alone = detection.fcos_loss(outputs[::2], objects[::2])
  for name in ("focal", "giou", "centerness", "positives", "correct"):
    np.testing.assert_allclose(kept[name], alone[name], rtol=1e-6, err_msg=name)
  assert kept["positives"] < detection.fcos_loss(outputs, objects)["positives"]


def test_mean_teacher_keeps_at_most_max_pseudo_boxes_the_most_confident():
  # Image 0: three confident boxes far apart (logits 5, 6, 4); image 1: one.
  teacher = _teacher_with_boxes([(0, 3, 1, 5.0), (0, 17, 2, 6.0), (0, 12, 0, 4.0),
                                 (1, 9, 1, 5.0)])
  student = jnp.asarray(np.random.default_rng(0).normal(size=teacher.shape), jnp.float32)
  config = Config(method="detection_mean_teacher", max_pseudo_boxes=2)
  terms = _pseudo_box_term(METHODS["detection_mean_teacher"](config), student, teacher)
  assert float(terms["pseudo_boxes_per_image"]) == 1.5  # (2 + 1) / 2
  every = detection.pseudo_objects(teacher, threshold=0.5)
  capped = detection.pseudo_objects(teacher, threshold=0.5, max_boxes=2)
  np.testing.assert_array_equal(every[0, :4, 4], [2, 1, 0, -1])  # best first
  np.testing.assert_array_equal(capped, every[:, :2])
  expected = detection.fcos_loss(student, capped)
  np.testing.assert_allclose(terms["pseudo_boxes"],
                             expected["focal"] + expected["giou"] + expected["centerness"],
                             rtol=1e-6)


def test_mean_teacher_without_pseudo_box_regression_trains_their_classes_only():
  teacher = _teacher_with_boxes([(0, 3, 1, 5.0), (0, 17, 2, 5.0), (1, 9, 1, 5.0)])
  student = jnp.asarray(np.random.default_rng(0).normal(size=teacher.shape), jnp.float32)
  method = METHODS["detection_mean_teacher"](
      Config(method="detection_mean_teacher", pseudo_box_regression=False))
  term = lambda s: _pseudo_box_term(method, s, teacher)["pseudo_boxes"]
  expected = detection.fcos_loss(student, detection.pseudo_objects(teacher, threshold=0.5))
  np.testing.assert_allclose(term(student), expected["focal"], rtol=1e-6)
  gradient = np.asarray(jax.grad(term)(student))
  assert np.abs(gradient[..., :3]).max() > 0  # class logits
  assert not gradient[..., 3:].any()  # distances and centre-ness


@pytest.mark.parametrize("flags, message", [
    ({"method": "dann", "max_pseudo_boxes": 2}, "--max_pseudo_boxes is for"),
    ({"method": "dann", "pseudo_box_regression": False}, "--pseudo_box_regression is for"),
    ({"method": "detection_mean_teacher", "max_pseudo_boxes": -1}, "--max_pseudo_boxes=-1"),
])
def test_pseudo_box_flags_are_refused_where_they_cannot_act(flags, message):
  with pytest.raises(ConfigError, match=message):
    methods.validate_config(Config(source="detect/digits", target="detect/digits_m", **flags),
                            "detection")
