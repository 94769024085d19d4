"""Tasks: what differs between image classification, text classification and
sequence tagging (`xdomain.tasks.base.Task`), chosen by the source domain."""

from xdomain.tasks.base import Task
from xdomain.tasks.detection import Detection
from xdomain.tasks.image_classification import ImageClassification
from xdomain.tasks.tagging import Tagging
from xdomain.tasks.text_classification import TextClassification

# (modality, task) of a domain (`xdomain.data.DomainInfo`) -> its task.
TASKS: dict[tuple[str, str], Task] = {
    ("image", "classification"): ImageClassification(),
    ("text", "classification"): TextClassification(),
    ("text", "tagging"): Tagging(),
    ("image", "detection"): Detection(),
}


def for_domain(info) -> Task:
  """The task of a domain (`xdomain.data.domain_info(name)`)."""
  return TASKS[(info.modality, info.task)]


__all__ = ["TASKS", "Detection", "ImageClassification", "Tagging", "Task", "TextClassification",
           "for_domain"]
