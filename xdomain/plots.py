"""`--plots`: learning curves, t-SNE of the features, proxy A-distance.

Written at the end of a run into the workdir: `learning_curves.png`,
`tsne.png` (source and target test features with the freshly initialised
model and with the trained one) and the proxy A-distance of both, which
`results.json` reports as `proxy_a_distance_before` / `_after`.
"""

from __future__ import annotations

import os
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from xdomain import evaluate  # noqa: E402
from xdomain.train import writer as writer_lib  # noqa: E402

FEATURES_PER_DOMAIN = 500


def learning_curves(workdir: str) -> str:
  """Plots the training losses and the test accuracies of metrics.jsonl."""
  events = writer_lib.read_metrics(workdir)
  train = [e for e in events if "total" in e]
  evals = [e for e in events if "target_test_accuracy" in e]
  loss_names = [k for k in train[0] if k in ("task", "total") or (
      k not in ("step", "examples_per_sec", "source_train_accuracy")
      and not k.startswith(("weight/", "learning_rate")))] if train else []
  figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  for name in loss_names:
    left.plot([e["step"] for e in train], [e[name] for e in train], label=name)
  left.set(xlabel="step", ylabel="loss", title="training losses")
  left.legend()
  for name in ("source_test_accuracy", "target_test_accuracy"):
    right.plot([e["step"] for e in evals], [e[name] for e in evals], marker="o", label=name)
  right.set(xlabel="step", ylabel="accuracy", ylim=(0, 1), title="test accuracy")
  right.legend()
  path = os.path.join(workdir, "learning_curves.png")
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)
  return path


def write_plots(experiment, state) -> dict[str, Any]:
  """Writes the plots of a finished run (an `xdomain.train.Experiment` and its
  final state); returns the proxy A-distances."""
  learning_curves(experiment.workdir)
  evaluator = experiment.evaluator
  initial = experiment.init_state()
  stages = {"before adaptation": initial, "after adaptation": state}
  figure, axes = plt.subplots(1, 2, figsize=(11, 5))
  distances = {}
  for axis, (title, stage) in zip(axes, stages.items()):
    features = {part: evaluator.features(part, stage.params["model"], stage.batch_stats,
                                         limit=FEATURES_PER_DOMAIN)
                for part in ("source", "target")}
    distance = evaluate.proxy_a_distance(features["source"], features["target"],
                                         seed=experiment.config.seed)
    distances["proxy_a_distance_" + title.split()[0]] = distance
    embedded = TSNE(init="pca", random_state=experiment.config.seed, perplexity=30).fit_transform(
        np.concatenate([features["source"], features["target"]]))
    n = len(features["source"])
    axis.scatter(*embedded[:n].T, s=4, label=f"source {experiment.config.source}")
    axis.scatter(*embedded[n:].T, s=4, label=f"target {experiment.config.target}")
    axis.set(title=f"{title} (proxy A-distance {distance:.2f})", xticks=[], yticks=[])
    axis.legend(markerscale=3)
  figure.tight_layout()
  figure.savefig(os.path.join(experiment.workdir, "tsne.png"), dpi=100)
  plt.close(figure)
  return distances
