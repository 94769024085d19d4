"""Tests of xdomain.evaluate.validators against numpy references written here."""

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from xdomain.evaluate import validators as v


def _rng(seed=0):
  return np.random.default_rng(seed)


def _softmax_rows(logits):
  """Plain per-row softmax, for the references."""
  out = []
  for row in logits:
    exps = [math.exp(z - max(row)) for z in row]
    out.append([e / sum(exps) for e in exps])
  return out


def _entropy_of(probs):
  return -sum(p * math.log(p) for p in probs if p > 0)


# ---------------------------------------------------------------------------
# Numpy references


def test_source_accuracy_matches_a_loop():
  rng = _rng(1)
  logits = rng.normal(size=(50, 5))
  labels = rng.integers(0, 5, size=50)
  correct = 0
  for row, label in zip(logits, labels):
    best = max(range(5), key=lambda c: row[c])
    correct += best == label
  assert v.source_accuracy(logits, labels) == pytest.approx(correct / 50, abs=1e-12)


def test_entropy_and_mutual_information_match_loops():
  rng = _rng(2)
  logits = 3 * rng.normal(size=(40, 6)).astype(np.float32)
  probs = _softmax_rows(logits.astype(np.float64))
  entropies = [_entropy_of(p) for p in probs]
  mean_p = [sum(p[c] for p in probs) / 40 for c in range(6)]
  assert v.entropy(logits) == pytest.approx(-sum(entropies) / 40, rel=1e-9)
  assert v.mutual_information(logits) == pytest.approx(
      _entropy_of(mean_p) - sum(entropies) / 40, rel=1e-9)


def _snd_reference(logits, temperature):
  probs = _softmax_rows(logits)
  unit = []
  for p in probs:
    norm = math.sqrt(sum(x * x for x in p))
    unit.append([x / norm for x in p])
  n = len(unit)
  total = 0.0
  for i in range(n):
    sims = {j: sum(a * b for a, b in zip(unit[i], unit[j])) / temperature
            for j in range(n) if j != i}
    z = sum(math.exp(s) for s in sims.values())
    total += _entropy_of([math.exp(s) / z for s in sims.values()])
  return total / n


@pytest.mark.parametrize("temperature", [0.05, 0.5])
def test_snd_matches_a_loop(temperature):
  rng = _rng(3)
  logits = 2 * rng.normal(size=(30, 4))
  assert v.snd(logits, temperature=temperature) == pytest.approx(
      _snd_reference(logits, temperature), rel=1e-9)


def test_snd_blocks_agree_with_one_block(monkeypatch):
  rng = _rng(4)
  logits = rng.normal(size=(25, 3))
  whole = v.snd(logits)
  monkeypatch.setattr(v, "_SND_BLOCK", 7)
  assert v.snd(logits) == pytest.approx(whole, rel=1e-12)


def test_snd_of_identical_predictions_is_its_maximum_log_n_minus_1():
  logits = np.tile([[1.0, 2.0, 0.5]], (9, 1))
  assert v.snd(logits) == pytest.approx(math.log(8), rel=1e-12)
  scattered = _rng(5).normal(size=(9, 3)) * 4
  assert v.snd(scattered) < math.log(8)


def _weights_reference(train_source, target, evaluate, c=1.0):
  x = np.concatenate([train_source, target])
  y = np.array([0] * len(train_source) + [1] * len(target))
  scaler = StandardScaler().fit(x)
  model = LogisticRegression(C=c, max_iter=1000).fit(scaler.transform(x), y)
  proba = model.predict_proba(scaler.transform(evaluate))
  return proba[:, 1] / proba[:, 0] * len(train_source) / len(target)


def test_importance_weights_match_a_domain_classifier_reference():
  rng = _rng(6)
  source_train = rng.normal(size=(120, 3))
  target = rng.normal(size=(80, 3)) + [1.0, 0.0, -0.5]
  source_val = rng.normal(size=(40, 3))
  got = v.importance_weights(source_val, target, source_train_features=source_train,
                             classifier_c=0.3)
  np.testing.assert_allclose(
      got, _weights_reference(source_train, target, source_val, c=0.3), rtol=1e-6)


@pytest.mark.parametrize("cross_fitted", [False, True])
def test_importance_weights_recover_a_known_density_ratio(cross_fitted):
  # p_s = N(0, 1), p_t = N(1, 1): w(x) = exp(x - 1/2), and log-odds linear in x,
  # so logistic regression is well specified. Twice as many source rows as
  # target rows: without the n_s / n_t correction w would be off by 2x.
  rng = _rng(7)
  target = rng.normal(1.0, 1.0, size=(1500, 1))
  if cross_fitted:
    source_val = rng.normal(0.0, 1.0, size=(3000, 1))
    got = v.importance_weights(source_val, target)
  else:
    source_val = rng.normal(0.0, 1.0, size=(200, 1))
    got = v.importance_weights(source_val, target,
                               source_train_features=rng.normal(size=(3000, 1)))
  inside = np.abs(source_val[:, 0] - 0.5) < 1.5
  np.testing.assert_allclose(got[inside], np.exp(source_val[inside, 0] - 0.5),
                             rtol=0.15)


def test_cross_fitted_weights_come_from_classifiers_that_did_not_see_the_row():
  # With one fold per row (leave-one-out), row i is weighted by a classifier
  # trained on the other source_val rows and the target rows, whatever the
  # seed's fold order.
  rng = _rng(21)
  source_val = rng.normal(size=(8, 2))
  target = rng.normal(size=(20, 2)) + [1.0, 0.5]
  got = v.importance_weights(source_val, target, folds=8, seed=5)
  for i in range(8):
    others = np.delete(source_val, i, axis=0)
    expected = _weights_reference(others, target, source_val[i:i + 1])[0]
    assert got[i] == pytest.approx(expected, rel=1e-6)


def test_weights_of_identical_domains_are_near_one_whatever_the_sizes():
  rng = _rng(8)
  got = v.importance_weights(rng.normal(size=(50, 2)), rng.normal(size=(2000, 2)),
                             source_train_features=rng.normal(size=(500, 2)))
  assert np.all(np.abs(got - 1.0) < 0.2)


def _losses(logits, labels):
  out = []
  for row, label in zip(_softmax_rows(logits), labels):
    out.append(-math.log(row[label]))
  return out


def test_importance_weighted_and_dev_match_their_formulas():
  rng = _rng(9)
  logits = 2 * rng.normal(size=(30, 4))
  labels = rng.integers(0, 4, size=30)
  w = rng.gamma(2.0, 0.5, size=30)
  for loss, losses in (("cross_entropy", _losses(logits, labels)),
                       ("zero_one", [float(np.argmax(r) != y)
                                     for r, y in zip(logits, labels)])):
    weighted = [wi * li for wi, li in zip(w, losses)]
    n = len(w)
    mean_l, mean_w = sum(weighted) / n, sum(w) / n
    cov = sum((a - mean_l) * (b - mean_w) for a, b in zip(weighted, w)) / (n - 1)
    var = sum((b - mean_w) ** 2 for b in w) / (n - 1)
    eta = -cov / var
    assert v.importance_weighted(logits, labels, weights=w, loss=loss) == (
        pytest.approx(-mean_l, rel=1e-9))
    assert v.dev(logits, labels, weights=w, loss=loss) == pytest.approx(
        -(mean_l + eta * mean_w - eta), rel=1e-9)


def test_dev_recovers_a_constant_loss_exactly_and_iwv_does_not():
  # L = c W, so the control variate removes all the noise of the weights.
  logits = np.array([[3.0, 0.0]] * 6)
  labels = np.ones(6, np.int64)  # all wrong: zero-one loss 1 everywhere
  w = np.array([0.2, 0.5, 0.9, 1.4, 2.0, 3.1])
  assert v.dev(logits, labels, weights=w, loss="zero_one") == pytest.approx(-1.0)
  assert v.importance_weighted(logits, labels, weights=w, loss="zero_one") == (
      pytest.approx(-w.mean()))


def test_features_path_equals_weights_path():
  rng = _rng(10)
  source_train, target = rng.normal(size=(60, 2)), rng.normal(size=(60, 2)) + 0.7
  source_val = rng.normal(size=(30, 2))
  logits, labels = rng.normal(size=(30, 3)), rng.integers(0, 3, size=30)
  w = _weights_reference(source_train, target, source_val)
  for fn in (v.importance_weighted, v.dev):
    assert fn(logits, labels, source_val, target,
              source_train_features=source_train) == pytest.approx(
                  fn(logits, labels, weights=w), rel=1e-6)


def test_indistinguishable_domains_give_the_plain_source_loss():
  logits = _rng(11).normal(size=(20, 3))
  labels = _rng(12).integers(0, 3, size=20)
  constant = np.ones((20, 4))
  got = v.importance_weighted(logits, labels, constant, np.ones((35, 4)),
                              source_train_features=np.ones((70, 4)))
  assert got == pytest.approx(-np.mean(_losses(logits, labels)), rel=1e-4)


def test_effective_sample_size_matches_kish_formula():
  rng = _rng(30)
  for w in (rng.gamma(0.3, 2.0, size=50), rng.uniform(size=7), np.array([2.0])):
    n = len(w)
    assert v.effective_sample_size(w) == pytest.approx(
        sum(w) ** 2 / (n * sum(x * x for x in w)), rel=1e-12)
  assert v.effective_sample_size(np.full(9, 3.7)) == pytest.approx(1.0)
  assert v.effective_sample_size([0.0, 5.0, 0.0, 0.0, 0.0]) == pytest.approx(0.2)
  # One huge weight among ordinary ones: finite, about 1/n (its square overflows unscaled).
  assert v.effective_sample_size([1e300, 1.0, 1.0, 1.0]) == pytest.approx(0.25)


def test_effective_sample_size_with_a_mask_equals_the_masked_subset():
  rng = _rng(31)
  w, keep = rng.gamma(1.0, 1.0, size=40), rng.random(40) < 0.6
  assert v.effective_sample_size(w, where=keep) == pytest.approx(
      v.effective_sample_size(w[keep]), rel=1e-12)


@pytest.mark.parametrize("weights, pattern", [
    ([1.0, -0.5], "weights must be >= 0"),
    ([0.0, 0.0], "no positive weight among the 2"),
    ([1.0, np.inf], "weights"),
    (np.ones((2, 2)), "weights must be float"),
])
def test_effective_sample_size_refuses_bad_weights(weights, pattern):
  with pytest.raises(ValueError, match=pattern):
    v.effective_sample_size(np.asarray(weights, float))


# ---------------------------------------------------------------------------
# Sign conventions: the better model scores higher


def _two_models_on_shifted_features():
  """Source val rows, half target-like; model A right on those, B on the rest."""
  rng = _rng(13)
  source_train = rng.normal(size=(400, 2))
  target = rng.normal(size=(400, 2)) + [2.0, 0.0]
  source_val = rng.normal(size=(100, 2))
  labels = rng.integers(0, 3, size=100)
  target_like = source_val[:, 0] > np.median(source_val[:, 0])

  def model(right_rows):
    logits = np.zeros((100, 3))
    wrong = (labels + 1) % 3
    logits[np.arange(100), np.where(right_rows, labels, wrong)] = 3.0
    return logits

  return (model(target_like), model(~target_like), labels, source_val, target,
          source_train)


@pytest.mark.parametrize("fn", [v.importance_weighted, v.dev])
@pytest.mark.parametrize("with_source_train", [True, False])
def test_weighted_validators_prefer_the_model_right_where_the_target_is(
    fn, with_source_train):
  good, bad, labels, source_val, target, source_train = (
      _two_models_on_shifted_features())
  assert v.source_accuracy(good, labels) == v.source_accuracy(bad, labels) == 0.5
  extra = dict(source_train_features=source_train) if with_source_train else {}
  assert (fn(good, labels, source_val, target, **extra)
          > fn(bad, labels, source_val, target, **extra))


def test_source_accuracy_prefers_the_more_accurate_model():
  labels = np.array([0, 1, 2, 1])
  good = np.eye(3)[labels]
  bad = np.eye(3)[[0, 0, 0, 0]]
  assert v.source_accuracy(good, labels) > v.source_accuracy(bad, labels)


def test_target_validators_prefer_confident_class_balanced_predictions():
  rng = _rng(14)
  classes = rng.integers(0, 4, size=80)
  confident = 8 * np.eye(4)[classes] + 0.3 * rng.normal(size=(80, 4))
  unsure = 0.3 * rng.normal(size=(80, 4))
  collapsed = 8 * np.eye(4)[np.zeros(80, np.int64)] + 0.3 * rng.normal(size=(80, 4))
  assert v.entropy(confident) > v.entropy(unsure)
  assert v.mutual_information(confident) > v.mutual_information(unsure)
  # Unlike entropy, MI does not reward collapsing onto one class.
  assert v.mutual_information(confident) > v.mutual_information(collapsed)
  # Tight clusters give dense neighbourhoods; scattered predictions do not.
  scattered = 3 * rng.normal(size=(80, 4))
  assert v.snd(confident) > v.snd(scattered)


# ---------------------------------------------------------------------------
# Masks: a validator with where= equals the validator on the masked subset


def test_masks_equal_the_masked_subset_for_target_validators():
  rng = _rng(15)
  logits = rng.normal(size=(40, 5))
  mask = rng.random(40) < 0.6
  garbage = logits.copy()
  garbage[~mask] = np.nan  # padded rows may hold anything
  for fn in (v.entropy, v.mutual_information, v.snd):
    assert fn(garbage, where=mask) == pytest.approx(fn(logits[mask]), rel=1e-12)


def test_masks_equal_the_masked_subset_for_source_validators():
  rng = _rng(16)
  n, m, p = 50, 60, 70
  logits, labels = rng.normal(size=(n, 3)), rng.integers(0, 3, size=n)
  source_val, target = rng.normal(size=(n, 2)), rng.normal(size=(m, 2)) + 0.5
  source_train = rng.normal(size=(p, 2))
  sv, tm, st = rng.random(n) < 0.7, rng.random(m) < 0.7, rng.random(p) < 0.7
  padded_labels = labels.copy()
  padded_labels[~sv] = -100  # an ignore index at padding is fine
  padded_logits, padded_val = logits.copy(), source_val.copy()
  padded_logits[~sv], padded_val[~sv] = np.nan, np.inf  # as are garbage rows
  padded_target = target.copy()
  padded_target[~tm] = np.nan
  assert v.source_accuracy(padded_logits, padded_labels, where=sv) == pytest.approx(
      v.source_accuracy(logits[sv], labels[sv]))
  for fn in (v.importance_weighted, v.dev):
    for train in (True, False):
      masked = fn(padded_logits, padded_labels, padded_val, padded_target,
                  source_train_features=source_train if train else None,
                  source_val_where=sv, target_where=tm,
                  source_train_where=st if train else None, seed=3)
      subset = fn(logits[sv], labels[sv], source_val[sv], target[tm],
                  source_train_features=source_train[st] if train else None,
                  seed=3)
      assert masked == pytest.approx(subset, rel=1e-9)
  weights = v.importance_weights(padded_val, padded_target, source_val_where=sv,
                                 target_where=tm)
  assert np.all(weights[~sv] == 0)
  np.testing.assert_allclose(weights[sv],
                             v.importance_weights(source_val[sv], target[tm]))


# ---------------------------------------------------------------------------
# VALIDATORS: one evaluation, every validator


def _inputs(**overrides):
  rng = _rng(17)
  fields = dict(
      source_val_logits=rng.normal(size=(30, 3)),
      source_val_labels=rng.integers(0, 3, size=30),
      source_val_features=rng.normal(size=(30, 4)),
      target_logits=rng.normal(size=(40, 3)),
      target_features=rng.normal(size=(40, 4)) + 0.5,
      source_train_features=rng.normal(size=(50, 4)),
      seed=2)
  fields.update(overrides)
  return v.ValidatorInputs(**fields)


def test_validators_dict_calls_each_validator_on_its_arrays():
  inputs = _inputs()
  assert set(v.VALIDATORS) == {"source_accuracy", "importance_weighted", "dev",
                               "snd", "entropy", "mutual_information"}
  iw_args = (inputs.source_val_logits, inputs.source_val_labels,
             inputs.source_val_features, inputs.target_features)
  iw_kwargs = dict(source_train_features=inputs.source_train_features)
  expected = {
      "source_accuracy": v.source_accuracy(inputs.source_val_logits,
                                           inputs.source_val_labels),
      "importance_weighted": v.importance_weighted(*iw_args, **iw_kwargs),
      "dev": v.dev(*iw_args, **iw_kwargs),
      "snd": v.snd(inputs.target_logits),
      "entropy": v.entropy(inputs.target_logits),
      "mutual_information": v.mutual_information(inputs.target_logits),
  }
  for name, fn in v.VALIDATORS.items():
    got = fn(inputs)
    assert isinstance(got, float)
    assert got == pytest.approx(expected[name], rel=1e-12), name


def test_weight_diagnostics_describe_the_weights_iwv_and_dev_share():
  inputs = _inputs()
  w = v.importance_weights(inputs.source_val_features, inputs.target_features,
                           source_train_features=inputs.source_train_features, seed=2)
  assert inputs.weight_diagnostics() == pytest.approx({
      "importance_weight_ess": v.effective_sample_size(w),
      "importance_weight_mean": float(np.mean(w))}, rel=1e-12)
  keep = _rng(19).random(30) < 0.7
  masked = _inputs(source_val_where=keep)
  assert masked.weight_diagnostics()["importance_weight_ess"] == pytest.approx(
      v.effective_sample_size(masked.weights[keep]), rel=1e-12)
  assert masked.weight_diagnostics()["importance_weight_mean"] == pytest.approx(
      float(np.mean(masked.weights[keep])), rel=1e-12)


def test_validators_dict_passes_masks_and_seed():
  rng = _rng(18)
  sv, tm = rng.random(30) < 0.7, rng.random(40) < 0.7
  masked = _inputs(source_val_where=sv, target_where=tm,
                   source_train_features=None)
  full = _inputs(source_train_features=None)
  subset = _inputs(source_val_logits=full.source_val_logits[sv],
                   source_val_labels=full.source_val_labels[sv],
                   source_val_features=full.source_val_features[sv],
                   target_logits=full.target_logits[tm],
                   target_features=full.target_features[tm],
                   source_train_features=None)
  for name, fn in v.VALIDATORS.items():
    assert fn(masked) == pytest.approx(fn(subset), rel=1e-9), name


def test_a_run_without_source_val_gets_one_line_from_source_validators():
  inputs = _inputs(source_val_logits=None, source_val_labels=None,
                   source_val_features=None)
  for name in ("source_accuracy", "importance_weighted", "dev"):
    with pytest.raises(ValueError, match=rf"^{name} needs a held-out source "
                       r"split \(source_val\); this run has none") as err:
      v.VALIDATORS[name](inputs)
    assert "\n" not in str(err.value)
  for name in ("snd", "entropy", "mutual_information"):
    assert np.isfinite(v.VALIDATORS[name](inputs))


# ---------------------------------------------------------------------------
# Bad input: one line naming the argument, its shape and what was expected


def _one_line(err):
  assert "\n" not in str(err.value)
  return str(err.value)


def test_empty_source_val_says_there_is_none():
  with pytest.raises(ValueError, match="needs a held-out source split") as err:
    v.source_accuracy(np.zeros((0, 3)), np.zeros(0, np.int64))
  _one_line(err)
  with pytest.raises(ValueError, match="needs a held-out source split"):
    v.importance_weighted(np.zeros((4, 2)), np.zeros(4, np.int64), None,
                          np.zeros((4, 3)))


@pytest.mark.parametrize("call, pattern", [
    (lambda: v.source_accuracy(np.zeros((5, 3)), np.zeros(4, np.int64)),
     r"source_val_labels must have one row per row of source_val_logits \(5\); "
     r"got shape \(4,\)"),
    (lambda: v.source_accuracy(np.zeros(5), np.zeros(5, np.int64)),
     r"source_val_logits must be logits \[N, K\]; got shape \(5,\)"),
    (lambda: v.source_accuracy(np.zeros((5, 3)), np.zeros(5)),
     r"source_val_labels must be integer labels \[N\]; got shape \(5,\) and "
     r"dtype float64"),
    (lambda: v.source_accuracy(np.zeros((2, 3)), np.array([0, 3])),
     r"source_val_labels must lie in \[0, 3\).*got values in \[0, 3\]"),
    (lambda: v.entropy(np.zeros((5, 3)), where=np.ones(4, bool)),
     r"entropy: where must be bool \[5\].*got shape \(4,\)"),
    (lambda: v.entropy(np.zeros((5, 3)), where=np.ones(5)),
     r"where must be bool \[5\].*dtype float64"),
    (lambda: v.snd(np.zeros((1, 3))), r"snd needs at least 2 rows of target_logits"),
    (lambda: v.snd(np.zeros((4, 3)), temperature=0.0), r"temperature must be > 0"),
    (lambda: v.mutual_information(np.array([[0.0, np.nan]])),
     r"target_logits has 1 non-finite values"),
    (lambda: v.importance_weighted(np.zeros((4, 2)), np.zeros(4, np.int64),
                                   np.zeros((3, 5)), np.zeros((6, 5))),
     r"source_val_features must have one row per row of source_val_logits "
     r"\(4\); got shape \(3, 5\)"),
    (lambda: v.importance_weights(np.zeros((4, 5)), np.zeros((6, 2))),
     r"target_features must have the feature width of source_val_features "
     r"\(5\); got shape \(6, 2\)"),
    (lambda: v.dev(np.zeros((4, 2)), np.zeros(4, np.int64), weights=np.ones(3)),
     r"weights must have one row per row of source_val_logits \(4\); got "
     r"shape \(3,\)"),
    (lambda: v.dev(np.zeros((4, 2)), np.zeros(4, np.int64), weights=np.ones(4),
                   loss="hinge"),
     r"loss must be one of \['cross_entropy', 'zero_one'\]; got 'hinge'"),
])
def test_bad_shapes_and_values_name_the_argument(call, pattern):
  with pytest.raises(ValueError, match=pattern) as err:
    call()
  _one_line(err)


def test_one_domain_only_says_the_domain_classifier_has_one_class():
  logits, labels = np.zeros((4, 2)), np.zeros(4, np.int64)
  features = _rng(19).normal(size=(4, 3))
  for target in (None, np.zeros((0, 3))):
    with pytest.raises(ValueError, match=r"needs two domains, but target_features "
                       r"is missing or empty \(one class only\)") as err:
      v.importance_weighted(logits, labels, features, target)
    _one_line(err)
  with pytest.raises(ValueError, match=r"target_where leaves no target rows.*one "
                     r"class only") as err:
    v.dev(logits, labels, features, np.ones((5, 3)),
          target_where=np.zeros(5, bool))
  _one_line(err)


def test_dev_with_a_degenerate_domain_classifier_says_so():
  logits, labels = _rng(20).normal(size=(6, 2)), np.array([0, 1, 0, 1, 1, 0])
  with pytest.raises(ValueError, match=r"dev: the 6 importance weights are all "
                     r"equal \(Var\(W\) = 0 up to rounding\).*degenerate") as err:
    v.dev(logits, labels, np.ones((6, 2)), np.ones((8, 2)),
          source_train_features=np.ones((9, 2)))
  _one_line(err)


def test_source_guard_admits_candidates_within_max_drop_of_the_best():
  accuracies = [0.9575, 0.9225, 0.84, 0.96 - 0.03, float("nan"), 0.96]  # 0.93: exactly 3 points
  reference = [a == a and a >= max(x for x in accuracies if x == x) - 0.03 - 1e-9
               for a in accuracies]
  assert v.source_guard(accuracies).tolist() == reference == [
      True, False, False, True, False, True]
  assert v.source_guard(accuracies, max_drop=1).tolist() == [True] * 4 + [False, True]
  assert v.source_guard([0.5], max_drop=0).tolist() == [True]


def test_source_guard_refuses_what_it_cannot_judge():
  with pytest.raises(ValueError, match="no candidates"):
    v.source_guard([])
  with pytest.raises(ValueError, match="held-out source split"):
    v.source_guard([float("nan"), float("inf")])
  with pytest.raises(ValueError, match=r"max_drop must lie in \[0, 1\]"):
    v.source_guard([0.9], max_drop=3)
