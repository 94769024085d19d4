"""Command lines of the benchmark scripts that keep their flags in a
`FlagValues` of their own (apart from absl's FLAGS, where another script's
flags of the same names live), so that absl's --help never reaches them."""

from __future__ import annotations

import sys

from absl import flags

HELP_FLAGS = frozenset({"-h", "--help", "--helpshort", "--helpfull"})


def parse_own_flags(flag_values: flags.FlagValues, argv: list[str], doc: str) -> list[str]:
  """Parses `argv` into `flag_values`: --help prints `doc` and the flags, a bad
  flag exits with one line; absl's own (logging) flags keep their defaults."""
  if HELP_FLAGS & set(argv[1:]):
    print(f"{doc}\nflags:\n{flag_values.get_help(include_special_flags=False)}")
    sys.exit(0)
  try:
    remaining = flag_values(argv)
  except flags.Error as error:
    sys.exit(f"{argv[0]}: {error}")
  flags.FLAGS.mark_as_parsed()
  return remaining
