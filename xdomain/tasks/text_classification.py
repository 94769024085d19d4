"""Text classification: a sentence or tweet -> one class."""

from __future__ import annotations

import numpy as np

from xdomain.config import Config
from xdomain.tasks import text


class TextClassification(text.TextTask):
  """One label per text; scored by accuracy and macro-F1 of the confusion matrix."""

  name = "text_classification"
  model_task = "classification"

  def sample_part(self, config: Config) -> dict[str, np.ndarray]:
    return {**super().sample_part(config), "label": np.zeros((1,), np.int32)}
