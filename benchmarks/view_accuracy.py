r"""Accuracy of trained image runs on their source test split under the
consistency views: as it is (what FixMatch's weak side reads, without
`--augment`), the mean teacher's view (`translate_and_noise`, a shift and
noise) and the strong view (`strong_augment`, FixMatch's student side).

  python benchmarks/view_accuracy.py --workdirs=<run>[,<run>...] [--view_seed=0]

Source labels only: it asks whether a view keeps what a network reads of a
digit, and never scores the target. Each view is drawn once per test batch
from `--view_seed`. Prints one markdown row per run.
"""

from __future__ import annotations

from absl import app
from absl import flags
import jax
import numpy as np

from xdomain import checkpoint
from xdomain import data
from xdomain import workdir as workdir_lib
from xdomain.config import Config
from xdomain.tasks import image_classification
from xdomain.train import Experiment

_WORKDIRS = flags.DEFINE_list("workdirs", [], "Finished image classification runs.")
_VIEW_SEED = flags.DEFINE_integer("view_seed", 0, "Seed of the views' random draws.")

VIEWS = {
    "as is": lambda images, key: images,
    "shift and noise": image_classification.translate_and_noise,
    "strong view": image_classification.strong_augment,
}


def view_accuracies(workdir: str, seed: int = 0) -> dict[str, float]:
  """{view name: accuracy} of the run's last checkpoint on its source test split.

  Raises:
    ValueError: the run has no config.json, or is not an image classification run.
  """
  record = workdir_lib.read_config(workdir)
  if record is None:
    raise ValueError(f"{workdir} holds no config.json: give the workdir of a finished run.")
  config = Config.from_dict(record)
  experiment = Experiment(config, workdir, devices=jax.devices()[:1])
  if not isinstance(experiment.task, image_classification.ImageClassification):
    raise ValueError(f"{workdir} is a {type(experiment.task).__name__} run; the views are"
                     " those of image classification.")
  variables = checkpoint.load_variables(workdir)
  predict = jax.jit(lambda images: experiment.model.apply(variables, images, train=False)
                    .argmax(-1))
  hits: dict[str, list[np.ndarray]] = {name: [] for name in VIEWS}
  batches = data.eval_batches(config.source, "test", batch_size=config.eval_batch_size,
                              preprocess=experiment.preprocess, data_dir=config.data_dir,
                              buckets=experiment.buckets)
  for i, batch in enumerate(batches):
    key = jax.random.fold_in(jax.random.key(seed), i)
    real = np.asarray(batch["mask"]).astype(bool)
    for name, view in VIEWS.items():
      predicted = np.asarray(predict(view(batch["image"], key)))
      hits[name].append((predicted == np.asarray(batch["label"]))[real])
  return {name: float(np.concatenate(h).mean()) for name, h in hits.items()}


def main(argv):
  del argv
  if not _WORKDIRS.value:
    raise app.UsageError("--workdirs: give at least one finished run.")
  print("| run | " + " | ".join(VIEWS) + " |")
  print("| --- |" + " --- |" * len(VIEWS))
  for workdir in _WORKDIRS.value:
    accuracies = view_accuracies(workdir, _VIEW_SEED.value)
    print(f"| {workdir} | " + " | ".join(f"{100 * a:.1f}" for a in accuracies.values()) + " |")


if __name__ == "__main__":
  app.run(main)
