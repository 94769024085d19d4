"""The floor and the ceiling of every table: source only and the target oracle."""

from xdomain.methods.base import Method
from xdomain.config import Config


def make_source_only(config: Config) -> Method:
  """Trains on the labelled source alone; the target is never seen."""
  del config
  return Method(name="source_only", uses_target=False)


def make_target_only(config: Config) -> Method:
  """The oracle: trains on the target's own labelled training split."""
  del config
  return Method(name="target_only", uses_target=False, train_on_target_labels=True)
