"""xdomain.tasks.detection: the FCOS loss, decoding, COCO metrics, flag checks,
and every detection flag file run for a step and resumed."""

import dataclasses
import json
import os
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import flagfiles
from tests.test_data_detection import write_coco
from xdomain import checkpoint
from xdomain import data
from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.data import subsets
from xdomain.evaluate import detection as detection_eval
from xdomain.models import detection as fcos
from xdomain.tasks import detection
from xdomain.train import Experiment
from xdomain.train import train_and_evaluate
from xdomain.train.experiment import validate_config
from xdomain.train.writer import read_metrics

SIDE, K = 32, 3
LOSS = jax.jit(fcos.fcos_loss)


def perfect_outputs(objects):
  """Outputs [1, P, K + 5] that predict `objects` exactly at their positives."""
  points, strides, ranges = fcos.locations((SIDE, SIDE))
  cls, ltrb = jax.jit(fcos.assign_targets)(jnp.asarray(objects[:, :4]),
                                  jnp.asarray(objects[:, 4].astype(np.int32)),
                                  jnp.asarray(points), jnp.asarray(strides),
                                  jnp.asarray(ranges))
  cls, ltrb = np.asarray(cls), np.asarray(ltrb)
  logits = np.where(np.eye(K)[np.maximum(cls, 0)] * (cls >= 0)[:, None] > 0, 9.0, -9.0)
  center = np.where(cls >= 0, 9.0, -9.0)[:, None]
  distances = np.where(cls[:, None] >= 0, np.maximum(ltrb, 1e-3), 1.0)
  return np.concatenate([logits, distances, center], -1)[None].astype(np.float32)


OBJECTS = np.array([[2.0, 2.0, 14.0, 14.0, 2.0], [16.0, 14.0, 30.0, 30.0, 0.0],
                    [0.0, 0.0, 0.0, 0.0, -1.0]], np.float32)


def test_loss_is_small_for_right_outputs_and_finite_without_objects():
  right = LOSS(jnp.asarray(perfect_outputs(OBJECTS)), OBJECTS[None])
  assert right["positives"] > 0 and right["correct"] == right["positives"]
  assert right["giou"] < 1e-3 and right["focal"] < 0.05
  wrong = LOSS(jnp.zeros_like(perfect_outputs(OBJECTS)), OBJECTS[None])
  assert wrong["focal"] > 10 * right["focal"] and wrong["giou"] > 0.1
  empty = np.zeros((1, 3, 5), np.float32)
  empty[..., 4] = -1
  terms = LOSS(jnp.asarray(perfect_outputs(OBJECTS)), empty)
  assert terms["positives"] == 0 and terms["giou"] == 0
  assert all(np.isfinite(float(v)) for v in terms.values())


def test_decode_and_metrics_give_full_ap_for_right_outputs():
  task = detection.Detection()
  outputs = jnp.asarray(perfect_outputs(OBJECTS))
  sums = task.eval_sums(None, None, None, outputs, {"objects": OBJECTS[None],
                                                    "mask": np.array([True])}, K)
  padded = {k: np.concatenate([np.asarray(v), np.zeros_like(np.asarray(v))]) for k, v in
            sums.items()}  # a padding row (valid False) is left out
  scores = task.metrics(None, [padded], ("a", "b", "c"), source_vocabulary=None)
  assert scores["ap50"] == pytest.approx(1.0) and scores["ap"] > 0.9
  assert scores["per_class_ap50"][1] is None and scores["per_class_ap50"][0] == pytest.approx(1)
  wrong = dict(padded, boxes=padded["boxes"][:, ::-1])
  assert task.metrics(None, [wrong], ("a", "b", "c"),
                      source_vocabulary=None)["ap50"] < 0.5


def test_coco_metrics_are_those_of_cocoeval_with_its_defaults():
  """coco_metrics matches only what it reports (all areas, 100 detections):
  the same figures as pycocotools' full evaluation and summary."""
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval
  rng = np.random.default_rng(0)
  truth, detections = [], []
  for _ in range(40):
    corner = rng.uniform(0, 40, (4, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(4, 24, (4, 2))], 1)
    classes = rng.integers(0, 3, 4)
    truth.append((boxes, classes))
    # Jittered true boxes (some with the wrong class) and random ones, scored at random.
    corner = rng.uniform(0, 40, (3, 2))
    found = np.concatenate([boxes + rng.normal(0, 2, boxes.shape),
                            np.concatenate([corner, corner + rng.uniform(4, 24, (3, 2))], 1)])
    labels = np.concatenate([np.where(rng.random(4) < 0.8, classes, (classes + 1) % 3),
                             rng.integers(0, 3, 3)])
    detections.append((found, rng.random(7), labels))
  got = detection_eval.coco_metrics(truth, detections, ("a", "b", "c"), (64, 64))

  def xywh(b):
    return [float(b[1]), float(b[0]), float(b[3] - b[1]), float(b[2] - b[0])]

  gt = COCO()
  gt.dataset = {
      "images": [{"id": i + 1, "height": 64, "width": 64} for i in range(len(truth))],
      "annotations": [{"id": 10 * i + j + 1, "image_id": i + 1, "category_id": int(k) + 1,
                       "bbox": xywh(b), "area": float((b[2] - b[0]) * (b[3] - b[1])),
                       "iscrowd": 0}
                      for i, (bs, ks) in enumerate(truth) for j, (b, k) in enumerate(zip(bs, ks))],
      "categories": [{"id": k + 1, "name": n} for k, n in enumerate("abc")]}
  gt.createIndex()
  full = COCOeval(gt, gt.loadRes([
      {"image_id": i + 1, "category_id": int(k) + 1, "bbox": xywh(b), "score": float(s)}
      for i, (bs, ss, ks) in enumerate(detections) for b, s, k in zip(bs, ss, ks)]), "bbox")
  full.evaluate()
  full.accumulate()
  full.summarize()
  assert 0.1 < full.stats[1] < 0.9  # neither trivial nor hopeless
  np.testing.assert_allclose([got["ap"], got["ap50"], got["ap75"]], full.stats[:3], atol=1e-12)
  precision = full.eval["precision"][:, :, :, 0, -1]  # all areas, 100 detections
  for k in range(3):
    per_class = precision[:, :, k]
    assert got["per_class_ap"][k] == pytest.approx(per_class[per_class > -1].mean(), abs=1e-12)
    assert got["per_class_ap50"][k] == pytest.approx(
        precision[0, :, k][precision[0, :, k] > -1].mean(), abs=1e-12)


def test_bad_flags_say_what_fits(tmp_path):
  base = Config(source="detect/digits", target="detect/digits_m", model="fcos",
                image_size=64, channels=3)
  with pytest.raises(ConfigError, match="--model=seed_cnn does not do detection.*fcos"):
    validate_config(dataclasses.replace(base, model="seed_cnn"))
  with pytest.raises(ConfigError, match="--model=fcos does not do image_classification"):
    validate_config(dataclasses.replace(base, source="digits/mnist", target="digits/mnist_m"))
  with pytest.raises(ConfigError, match="different label sets"):
    validate_config(dataclasses.replace(base, target=write_coco(tmp_path)))
  with pytest.raises(ConfigError, match="multiple of 16"):
    validate_config(dataclasses.replace(base, image_size=60))
  with pytest.raises(ConfigError, match="--method=cdan does not do detection"):
    validate_config(dataclasses.replace(base, method="cdan"))
  with pytest.raises(ConfigError, match="--augment"):
    validate_config(dataclasses.replace(base, augment=True))
  with pytest.raises(ConfigError, match="detection_mean_teacher is for detection"):
    validate_config(Config(source="digits/mnist", target="digits/mnist_m",
                           method="detection_mean_teacher"))


TINY = dict(flagfiles.SMOKE_OVERRIDES, steps=1, checkpoint_every=1, eval_every=1,
            batch_size=8, image_size=64, eval_batch_size=512)


# Every flag file (dann.flags has a discriminator per FPN level: nested discriminator
# parameters through the checkpoint), and DANN with the one shared discriminator,
# the default without the flag file.
RUNS = [(f, {}) for f in flagfiles.flag_files("detection")] + [
    ("experiments/detection/dann.flags", {"discriminator_per_level": False})]


@pytest.mark.parametrize("flagfile, extra", RUNS,
                         ids=[f + "".join(f"+{k}" for k in extra) for f, extra in RUNS])
def test_detection_flag_file_runs_and_resumes(flagfile, extra, data_dir, tmp_path):
  plots = flagfile.endswith("/dann.flags") and not extra  # the plots of one run are enough
  overrides = flagfiles.with_upstreams(flagfile, dict(TINY, **extra, data_dir=data_dir),
                                       tmp_path)  # epm_two_stage's dann.flags run
  config = flagfiles.config_from_flagfile(flagfile, **overrides, plots=plots)
  validate_config(config)
  workdir = str(tmp_path / "run")
  if config.init_from:  # the whole detector starts where its upstream run ended
    start = Experiment(config, workdir, devices=flagfiles.smoke_devices()).prepare_state()
    chex.assert_trees_all_equal(start.params["model"],
                                checkpoint.load_variables(config.init_from)["params"])
  results = train_and_evaluate(config, workdir, devices=flagfiles.smoke_devices())
  assert results["step"] == 1
  for part in ("source", "target"):
    assert 0.0 <= results[f"{part}_test_ap50"] <= 1.0
    assert len(results[f"{part}_test_per_class_ap"]) == 10
  # Rerun (the plots, drawn once, left out): the restored model must score as
  # the saved one did.
  resumed = train_and_evaluate(dataclasses.replace(config, plots=False), workdir,
                               devices=flagfiles.smoke_devices())
  for name, value in results.items():
    if name.startswith(("target_test_", "source_test_", "ema_")):
      assert resumed[name] == value, name
  events = read_metrics(workdir)
  assert [e["step"] for e in events if "total" in e] == [1]
  for name in ("learning_curves.png", "detections.png") if plots else ():
    assert os.path.getsize(os.path.join(workdir, name)) > 10_000, name
  if config.method in ("dann", "epm"):
    assert all("domain_adversarial" in e for e in events if "total" in e)
  if config.method == "detection_mean_teacher":
    assert all("pseudo_boxes" in e and 0 <= e["pseudo_boxes_per_image"] <= 8
               for e in events if "total" in e)
    assert "ema_target_test_ap50" in resumed
  with open(os.path.join(workdir, "results.json")) as f:
    assert "target_test_ap50" in json.load(f)


def test_validator_is_ap50_on_the_held_out_source_rows(data_dir, tmp_path):
  config = flagfiles.config_from_flagfile(
      "experiments/detection/source_only.flags",
      **dict(TINY, steps=3, eval_every=3, source_val_fraction=0.05), data_dir=data_dir)
  workdir = str(tmp_path / "run")
  train_and_evaluate(config, workdir, devices=flagfiles.smoke_devices())
  logged = [e for e in read_metrics(workdir) if "validator/source_ap50" in e]
  assert [e["step"] for e in logged] == [3]
  # AP50 of the saved model, computed here, on the rows that never trained.
  run = Experiment(config, str(tmp_path / "unused"), devices=flagfiles.smoke_devices())
  _, held = subsets.source_val_split(
      data.load_domain(config.source, "train", data_dir=data_dir), 0.05)
  batch = next(data.eval_batches(config.source, "train", batch_size=len(held),
                                 preprocess=run.preprocess, data_dir=data_dir, rows=held,
                                 process_index=0, process_count=1))
  variables = checkpoint.load_variables(workdir)
  outputs = run.model.apply(variables, batch["image"], train=False)
  scores, boxes = fcos.decode(outputs, min_probability=detection_eval.SCORE_THRESHOLD)
  found = list(detection_eval.per_image(
      {"scores": np.asarray(scores), "boxes": np.asarray(boxes), "objects": batch["objects"],
       "valid": batch["mask"]}))
  assert len(found) == len(held) == 100
  expected = detection_eval.coco_metrics([f[1] for f in found], [f[2] for f in found],
                                         run.source_info.label_names, (64, 64))["ap50"]
  assert logged[0]["validator/source_ap50"] == pytest.approx(expected, abs=1e-6)
  assert expected > 0  # an AP50 of 0 would match any row set
  # The evaluator scores the saved model alike; without held-out rows it has
  # no validator to give.
  state = types.SimpleNamespace(params={"model": variables["params"]},
                                batch_stats=variables["batch_stats"])
  assert run.evaluator.validators(state)["validator/source_ap50"] == pytest.approx(
      expected, abs=1e-6)
  without = Experiment(dataclasses.replace(config, source_val_fraction=0.0),
                       str(tmp_path / "without"), devices=flagfiles.smoke_devices())
  assert without.evaluator.validators(state) == {}
