r"""What the words a source never labelled do to a text run's scores.

  python -m benchmarks.unseen_words --workdirs=/tmp/xdomain/sentiment_dann,/tmp/xdomain/wv

For each finished text run (a workdir of experiments/main.py whose model reads
word embeddings) it scores both test splits twice: as trained, and with every
word that the source's training split lacks read as <unk> (its embedding row
replaced by <unk>'s: what `--vocab_from=source` would have made of it, without
retraining). The gap is what those words' vectors, which no label trained,
do to the target. It reads target labels: a diagnostic, never a validator.
Prints a markdown table of `--metric` (any `<part>_test_<name>` key the run's
results carry, e.g. target_test_token_accuracy for taggers).
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags
import numpy as np

from benchmarks import cli
from xdomain import checkpoint
from xdomain import transfer
from xdomain.data import text
from xdomain.methods import teacher

_FLAGS = flags.FlagValues()
_WORKDIRS = flags.DEFINE_list("workdirs", None, "Finished text runs.", required=True,
                              flag_values=_FLAGS)
_METRIC = flags.DEFINE_string("metric", "test_accuracy",
                              "Score to compare, without its `source_`/`target_` prefix.",
                              flag_values=_FLAGS)

EMBEDDING = tuple(transfer.EMBEDDING.split("/"))


def word_embedding(workdir: str, model: str, params: dict) -> np.ndarray:
  """The word embedding [vocab, dim] in the parameters of the run in `workdir`
  (of `--model=model`); ValueError naming the run if its model has none."""
  node = params
  for key in EMBEDDING:
    if not isinstance(node, dict) or key not in node:
      raise ValueError(f"{workdir}: its model ({model}) has no word embeddings at"
                       f" {transfer.EMBEDDING}; give the workdir of a text run.")
    node = node[key]
  return np.asarray(node)


def scores(workdir: str) -> dict:
  """`{'unseen_words', 'vocabulary', 'as_trained', 'unseen_as_unk'}` of a run:
  the two score dicts (`Evaluator.scores`) of its latest checkpoint."""
  from xdomain.train import Experiment  # imports JAX's backend: after flag parsing

  config = teacher.load_teacher_config(workdir)
  variables = checkpoint.load_variables(workdir)
  params = variables["params"]
  word_embedding(workdir, config.model, params)  # a text run, or one line saying not
  run = Experiment(config, workdir)
  seen = np.asarray(run.source_vocabulary)
  batch_stats = variables.get("batch_stats", {})
  return {"unseen_words": int(np.sum(~seen)), "vocabulary": int(seen.size),
          "as_trained": run.evaluator.scores(params, batch_stats),
          "unseen_as_unk": run.evaluator.scores(unseen_as_unk(params, seen), batch_stats)}


def unseen_as_unk(params: dict, seen: np.ndarray) -> dict:
  """`params` with the embedding row of every id where `seen` (bool [vocab]) is
  False replaced by <unk>'s; `params` itself is left as it is."""
  *parents, leaf = EMBEDDING
  copy = dict(params)
  node = copy
  for key in parents:
    node[key] = dict(node[key])
    node = node[key]
  embedding = np.array(node[leaf])
  embedding[~seen] = embedding[text.UNK_ID]
  node[leaf] = embedding
  return copy


def main(argv):
  del argv
  metric = _METRIC.value
  print(f"| run | words the source lacks | target {metric} | the same, those words as <unk> |"
        f" source {metric} | the same, as <unk> |")
  print("| --- | --- | --- | --- | --- | --- |")
  for workdir in _WORKDIRS.value:
    result = scores(workdir)
    values = []
    for part in ("target", "source"):
      for which in ("as_trained", "unseen_as_unk"):
        key = f"{part}_{metric}"
        if key not in result[which]:
          sys.exit(f"--metric: {workdir} has no {key}; it has {sorted(result[which])}.")
        values.append(f"{100 * result[which][key]:.1f}")
    print(f"| {workdir} | {result['unseen_words']:,} of {result['vocabulary']:,} | "
          + " | ".join(values) + " |", flush=True)


def _parse_flags(argv: list[str]) -> list[str]:
  return cli.parse_own_flags(_FLAGS, argv, __doc__)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
