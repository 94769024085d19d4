r"""A linear reference for text classification pairs: tf-idf + logistic regression.

  python benchmarks/text_reference.py --domains=sentiment/movies,sentiment/tweets,\
sentiment/products,sentiment/editorials

For every ordered pair of `--domains` it fits word 1-2-gram tf-idf features (on
the training text of both domains, as the networks' vocabulary is built) and a
logistic regression on the source's labelled training split, and reports its
target test accuracy; the last column fits the target's own training split
(the in-domain ceiling of this model). For the VADER sentiment domains a second
table scores each target's test split with VADER's word lexicon alone (the sign
of the sum of its tokens' valences; no training): outside knowledge that no
method here uses, made by the authors of these ground-truth sets.
Deterministic: no seeds. Writes `benchmarks/results/reference_<family>.md`.
"""

from __future__ import annotations

import itertools
import os
import shlex
import sys

import numpy as np
from absl import app
from absl import flags
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from xdomain import data
from xdomain.data import text
from xdomain.data import text_builders

# A registry of its own, joined to absl's only when run as a script: tests
# import `lexicon_scores` beside benchmarks/accuracy.py, which defines --out too.
_FLAGS = flags.FlagValues()
_DOMAINS = flags.DEFINE_list(
    "domains", ["sentiment/movies", "sentiment/tweets", "sentiment/products",
                "sentiment/editorials"], "Text classification domains (every ordered pair).",
    flag_values=_FLAGS)
_C = flags.DEFINE_float("c", 10.0, "Inverse L2 strength of the logistic regression.",
                        flag_values=_FLAGS)
_OUT = flags.DEFINE_string("out", None,
                           "Markdown file; default benchmarks/results/reference_<family>.md.",
                           flag_values=_FLAGS)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def accuracy(features, train: dict, test: dict, c: float) -> float:
  """Test accuracy of logistic regression on `features` (tf-idf) fitted on `train`."""
  model = LogisticRegression(C=c, max_iter=5000)
  model.fit(features.transform(train["text"]), train["label"])
  return float(model.score(features.transform(test["text"]), test["label"]))


def lexicon_scores(lexicon: dict[str, float], test: dict) -> tuple[float, float]:
  """(accuracy, share of sentences without a lexicon word) of predicting
  positive where the valences of a sentence's tokens sum above 0; sentences
  that sum to 0 count as positive, the larger class of most of these domains."""
  valences = [[lexicon[t] for t in text.tokenize(sentence) if t in lexicon]
              for sentence in test["text"]]
  predictions = np.array([sum(v) >= 0 for v in valences], np.int32)
  uncovered = np.mean([not v for v in valences])
  return float(np.mean(predictions == test["label"])), float(uncovered)


def main(argv):
  del argv
  for name in _DOMAINS.value:
    if data.domain_info(name).task != "classification":
      raise app.UsageError(f"{name} is not a text classification domain")
  splits = {name: {split: data.load_domain(name, split) for split in ("train", "test")}
            for name in _DOMAINS.value}
  lines = ["| source -> target | trained on the source | trained on the target |",
           "| --- | --- | --- |"]
  cross = []
  for source, target in itertools.permutations(_DOMAINS.value, 2):
    both = list(splits[source]["train"]["text"]) + list(splits[target]["train"]["text"])
    features = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(both)
    transfer = accuracy(features, splits[source]["train"], splits[target]["test"], _C.value)
    in_domain = accuracy(features, splits[target]["train"], splits[target]["test"], _C.value)
    cross.append((transfer, in_domain))
    lines.append(f"| {source} -> {target} | {100 * transfer:.1f} | {100 * in_domain:.1f} |")
  means = 100 * np.mean(cross, axis=0)
  lines.append(f"| mean | **{means[0]:.1f}** | **{means[1]:.1f}** |")
  if all(name.startswith("sentiment/") for name in _DOMAINS.value):
    lexicon = text_builders.vader_lexicon()
    lines += ["", "| target (no training) | VADER lexicon alone | sentences without a lexicon word |",
              "| --- | --- | --- |"]
    scores = []
    for name in _DOMAINS.value:
      correct, uncovered = lexicon_scores(lexicon, splits[name]["test"])
      scores.append(correct)
      lines.append(f"| {name} | {100 * correct:.1f} | {100 * uncovered:.1f} |")
    # Each target is the target of (len(domains) - 1) pairs: the pair mean.
    lines.append(f"| mean | **{100 * np.mean(scores):.1f}** | |")
  command = "python benchmarks/text_reference.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  header = [f"Target test accuracy (%) of word 1-2-gram tf-idf + logistic regression"
            f" (C={_C.value:g}), made by `{command}`.", ""]
  family = _DOMAINS.value[0].split("/")[0]
  out = _OUT.value or os.path.join(REPO, "benchmarks", "results", f"reference_{family}.md")
  with open(out, "w") as f:
    f.write("\n".join(header + lines) + "\n")
  print("\n".join(header + lines))


if __name__ == "__main__":
  flags.FLAGS.append_flag_values(_FLAGS)
  for name in _FLAGS:
    flags.declare_key_flag(name)  # listed by --help
  _FLAGS.mark_as_parsed()  # the holders read _FLAGS, whose flags absl parses
  app.run(main)
