"""`--plots`: learning curves, t-SNE of the features, proxy A-distance; detections.

Written at the end of a run into the workdir:
- `learning_curves.png`: the loss terms; the gradient norm, learning rates and
  term schedules on their own panel; the test accuracies; and the validators
  (rescaled to [0, 1] over the run) beside the target accuracy, so that one
  sees whether they track it;
- `tsne.png`: source and target test features of a reference model and of the
  trained one. The reference is the run in `--plots_baseline` (e.g. the
  source-only run of the same pair and seed: the comparison that says what
  adaptation did); without it, the randomly initialised model, and the title
  says so. `results.json` reports both proxy A-distances,
  `proxy_a_distance_<baseline|initial>` and `proxy_a_distance_after`.
- detection runs, instead of `tsne.png`: `detections.png`, the first
  `DETECTION_IMAGES` target test images with their true boxes and the trained
  model's detections of score `DETECTION_SCORE` or more.
"""

from __future__ import annotations

import os
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from xdomain import checkpoint  # noqa: E402
from xdomain import evaluate  # noqa: E402

FEATURES_PER_DOMAIN = 500
DETECTION_IMAGES = 8
DETECTION_SCORE = 0.3
DETECTIONS_PER_IMAGE = 10  # the best ones: more hide the image
# Logged per step but not loss terms: they get a panel of their own.
_NOT_LOSSES = ("step", "examples_per_sec", "source_train_accuracy", "grad_norm",
               "compile_seconds")
_SCHEDULE_PREFIXES = ("weight/", "learning_rate", "schedule/")


def learning_curves(events: list[dict[str, Any]], workdir: str, headline: str = "accuracy"
                    ) -> str:
  """Plots a run's events (metrics.jsonl): losses, schedules, the test metric
  `headline` (the task's: accuracy, ap50), validators; returns the figure's path."""
  target_metric = f"target_test_{headline}"
  train = [e for e in events if "total" in e]
  evals = [e for e in events if target_metric in e]
  names = list(train[0]) if train else []
  losses = [k for k in names if k not in _NOT_LOSSES and not k.startswith(_SCHEDULE_PREFIXES)
            and not k.endswith("_kept")]
  schedules = [k for k in names if k == "grad_norm" or k.startswith(_SCHEDULE_PREFIXES)]
  figure, axes = plt.subplots(1, 4, figsize=(20, 4))
  steps = [e["step"] for e in train]
  for name in losses:
    axes[0].plot(steps, [e[name] for e in train], label=name)
  axes[0].set(xlabel="step", ylabel="loss", title="training losses")
  for name in schedules:
    axes[1].plot(steps, [e[name] for e in train], label=name)
  axes[1].set(xlabel="step", yscale="log", title="gradient norm, learning rates, weights")
  eval_steps = [e["step"] for e in evals]
  for name in (f"source_test_{headline}", target_metric):
    axes[2].plot(eval_steps, [e[name] for e in evals], marker="o", label=name)
  axes[2].set(xlabel="step", ylabel=headline, ylim=(0, 1), title=f"test {headline}")
  validators = sorted({k for e in evals for k in e if k.startswith("validator/")})
  for name in validators:
    values = np.array([e.get(name, np.nan) for e in evals], np.float64)
    spread = np.nanmax(values) - np.nanmin(values)
    rescaled = (values - np.nanmin(values)) / spread if spread > 0 else np.zeros_like(values)
    axes[3].plot(eval_steps, rescaled, marker=".", label=name[len("validator/"):])
  axes[3].plot(eval_steps, [e[target_metric] for e in evals], "k--", marker="o",
               label=f"target test {headline} (not seen by the validators)")
  axes[3].set(xlabel="step", ylim=(-0.05, 1.05),
              title="validators, rescaled to [0, 1] (higher is better)")
  for axis in axes:
    if axis.get_legend_handles_labels()[0]:
      axis.legend(fontsize="small")
  path = os.path.join(workdir, "learning_curves.png")
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)
  return path


def write_plots(experiment, state, events: list[dict[str, Any]]) -> dict[str, Any]:
  """Writes the plots of a finished run (an `xdomain.train.Experiment`, its
  final state and its metrics.jsonl events); returns the proxy A-distances."""
  config = experiment.config
  learning_curves(events, experiment.workdir, experiment.task.headline)
  evaluator = experiment.evaluator
  if experiment.task.name == "detection":
    draw_detections(evaluator.detections("target", state.params["model"], state.batch_stats,
                                         limit=DETECTION_IMAGES),
                    experiment.source_info.label_names,
                    os.path.join(experiment.workdir, "detections.png"),
                    title=f"{config.method} on {config.target} (test)")
    return {}
  if config.plots_baseline:
    variables = checkpoint.load_variables(config.plots_baseline)
    reference = ("baseline", f"baseline {os.path.basename(config.plots_baseline.rstrip('/'))}",
                 variables["params"], variables["batch_stats"])
  else:
    initial = experiment.init_state()
    reference = ("initial", "random initialisation (no --plots_baseline)",
                 initial.params["model"], initial.batch_stats)
  stages = [reference, ("after", f"after training ({config.method})", state.params["model"],
                        state.batch_stats)]
  figure, axes = plt.subplots(1, 2, figsize=(11, 5))
  distances = {}
  for axis, (key, title, params, batch_stats) in zip(axes, stages):
    features = {part: evaluator.features(part, params, batch_stats, limit=FEATURES_PER_DOMAIN)
                for part in ("source", "target")}
    distance = evaluate.proxy_a_distance(features["source"], features["target"],
                                         seed=config.seed)
    distances[f"proxy_a_distance_{key}"] = distance
    embedded = TSNE(init="pca", random_state=config.seed, perplexity=30).fit_transform(
        np.concatenate([features["source"], features["target"]]))
    n = len(features["source"])
    axis.scatter(*embedded[:n].T, s=4, label=f"source {config.source}")
    axis.scatter(*embedded[n:].T, s=4, label=f"target {config.target}")
    axis.set(title=f"{title}\nproxy A-distance {distance:.2f}", xticks=[], yticks=[])
    axis.legend(markerscale=3)
  figure.tight_layout()
  figure.savefig(os.path.join(experiment.workdir, "tsne.png"), dpi=100)
  plt.close(figure)
  return distances


def draw_detections(images: list[dict[str, np.ndarray]], label_names, path: str, *,
                    title: str) -> str:
  """Draws images with their true boxes (green) and their best detections (red,
  dashed, `class score`; at most DETECTIONS_PER_IMAGE of score >= DETECTION_SCORE),
  four to a row; returns `path`.

  Args:
    images: per image `image` [H, W, C] (any range: shown min-max scaled),
      `true_boxes` [n, 4] and `true_classes` [n], `boxes` [m, 4], `scores` [m]
      (best first) and `classes` [m]; boxes `[ymin, xmin, ymax, xmax]` in pixels.
    label_names: class names by id.
    path: the PNG to write.
    title: the figure's title.
  """
  columns = min(4, len(images))
  rows = -(-len(images) // columns)
  figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows + 0.5),
                              squeeze=False)
  for axis in axes.ravel()[len(images):]:
    axis.axis("off")
  for axis, item in zip(axes.ravel(), images):
    image = np.asarray(item["image"], np.float64)
    image = (image - image.min()) / max(image.max() - image.min(), 1e-12)
    axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
    drawn = [(item["true_boxes"], item["true_classes"], None, "lime", "-")]
    keep = np.flatnonzero(item["scores"] >= DETECTION_SCORE)[:DETECTIONS_PER_IMAGE]
    drawn.append((item["boxes"][keep], item["classes"][keep], item["scores"][keep], "red", "--"))
    for boxes, classes, scores, colour, style in drawn:
      for k, (ymin, xmin, ymax, xmax) in enumerate(boxes):
        axis.add_patch(plt.Rectangle((xmin - 0.5, ymin - 0.5), xmax - xmin, ymax - ymin,
                                     fill=False, edgecolor=colour, linestyle=style))
        label = str(label_names[int(classes[k])])
        if scores is not None:
          axis.text(xmin, ymax, f"{label} {scores[k]:.2f}", color=colour, fontsize=7,
                    va="top")
        else:
          axis.text(xmin, ymin, label, color=colour, fontsize=7, va="bottom")
    axis.set(xticks=[], yticks=[])
  figure.suptitle(f"{title}: true boxes (green), detections >= {DETECTION_SCORE} (red)")
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)
  return path
