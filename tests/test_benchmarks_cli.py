"""benchmarks.cli: the scripts with flags of their own answer --help and name a bad flag."""

import importlib

import pytest


@pytest.mark.parametrize("module, flag", [("selection", "--grid"),
                                          ("profile_step", "--experiment"),
                                          ("unseen_words", "--workdirs"),
                                          ("domain_axis", "--min_tokens")])
def test_help_lists_the_scripts_own_flags_and_bad_flags_are_one_line(module, flag, capsys):
  script = importlib.import_module(f"benchmarks.{module}")
  with pytest.raises(SystemExit) as exit_info:
    script._parse_flags([module, "--help"])  # pylint: disable=protected-access
  assert exit_info.value.code == 0
  printed = capsys.readouterr().out
  assert printed.startswith(script.__doc__.splitlines()[0])
  assert f"{flag}:" in printed
  with pytest.raises(SystemExit, match="Unknown command line flag 'nosuchflag'"):
    script._parse_flags([module, "--nosuchflag"])  # pylint: disable=protected-access
