r"""Do a text run's word vectors encode which domain a word is frequent in?

  python -m benchmarks.domain_axis --workdirs=/tmp/xdomain/transfer/skipgram_sentiment

For each run (a workdir of experiments/main.py whose model reads word
embeddings, e.g. a skip-gram run) it fits a linear map from the word vectors
to each word's log frequency ratio between the two domains' training text,
log((c_target + 1) / N_target) - log((c_source + 1) / N_source), on half of
the words that occur at least `--min_tokens` times, and prints its R^2 on the
other half; beside it the same for random vectors of the embedding's shape,
the first principal component's share of the words' variance, how closely the
domain direction of `--remove_domain_direction`
(`xdomain.transfer.domain_direction`) lies along that component, and
the R^2 after removing it. It reads the domains' text and no label.
"""

from __future__ import annotations

from absl import app
from absl import flags
import numpy as np

from benchmarks import cli
from benchmarks import unseen_words
from xdomain import checkpoint
from xdomain import transfer
from xdomain.data import text_pipeline
from xdomain.methods import teacher

_FLAGS = flags.FlagValues()
_WORKDIRS = flags.DEFINE_list("workdirs", None, "Text runs with word embeddings.",
                              required=True, flag_values=_FLAGS)
_MIN_TOKENS = flags.DEFINE_integer("min_tokens", 5, "Words seen fewer times in both"
                                   " domains' training text together are left out.",
                                   flag_values=_FLAGS)


def heldout_r2(features: np.ndarray, values: np.ndarray, seed: int = 0) -> float:
  """R^2 on a random half of the rows of a least-squares fit (with intercept)
  of `values` [n] from `features` [n, d] on the other half."""
  order = np.random.default_rng(seed).permutation(len(values))
  fit, test = order[:len(order) // 2], order[len(order) // 2:]
  design = lambda x: np.c_[x, np.ones(len(x))]  # noqa: E731
  coef = np.linalg.lstsq(design(features[fit]), values[fit], rcond=None)[0]
  residual = values[test] - design(features[test]) @ coef
  return float(1 - residual @ residual / np.sum((values[test] - values[test].mean()) ** 2))


def axis(embedding: np.ndarray, source_counts: np.ndarray, target_counts: np.ndarray,
         min_tokens: int) -> dict[str, float]:
  """The row that `main` prints for one run's embedding [vocab, dim] and the
  domains' token counts [vocab]."""
  words = np.arange(len(embedding)) >= 2  # not <pad>, <unk>
  words &= source_counts + target_counts >= min_tokens
  ratio = (np.log((target_counts + 1) / target_counts.sum())
           - np.log((source_counts + 1) / source_counts.sum()))
  vectors = np.asarray(embedding, np.float64)
  centred = vectors[words] - vectors[words].mean(axis=0)
  _, singular, components = np.linalg.svd(centred, full_matrices=False)
  direction = transfer.domain_direction(vectors, source_counts, target_counts)
  removed = transfer.remove_domain_direction(vectors, source_counts, target_counts)
  noise = np.random.default_rng(1).normal(size=vectors.shape)
  return {"words": int(words.sum()),
          "r2": heldout_r2(vectors[words], ratio[words]),
          "r2_random": heldout_r2(noise[words], ratio[words]),
          "pc1_share": float(singular[0] ** 2 / np.sum(singular ** 2)),
          "pc2_share": float(singular[1] ** 2 / np.sum(singular ** 2)),
          "cos_pc1": float(abs(components[0] @ direction)),
          "r2_removed": heldout_r2(removed[words], ratio[words])}


def run_axis(workdir: str, min_tokens: int) -> dict[str, float]:
  """`axis` of the latest checkpoint of the text run in `workdir`."""
  config = teacher.load_teacher_config(workdir)
  embedding = unseen_words.word_embedding(workdir, config.model,
                                         checkpoint.load_params(workdir))
  vocab = text_pipeline.experiment_vocabulary(config, workdir, write=False)
  counts = [text_pipeline.token_counts(config, vocab, domain)
            for domain in (config.source, config.target)]
  return axis(embedding, *counts, min_tokens)


def main(argv):
  del argv
  print("| run | words | R^2 of the log frequency ratio | random vectors | first PC's share"
        " (second's) | cos(domain direction, first PC) | R^2, direction removed |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for workdir in _WORKDIRS.value:
    row = run_axis(workdir, _MIN_TOKENS.value)
    print(f"| {workdir} | {row['words']:,} | {row['r2']:.2f} | {row['r2_random']:.2f} |"
          f" {row['pc1_share']:.3f} ({row['pc2_share']:.3f}) | {row['cos_pc1']:.2f} |"
          f" {row['r2_removed']:.2f} |", flush=True)


def _parse_flags(argv: list[str]) -> list[str]:
  return cli.parse_own_flags(_FLAGS, argv, __doc__)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
