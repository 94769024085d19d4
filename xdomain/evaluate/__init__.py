"""Evaluation: metrics of host arrays, the evaluator of a run, and validators
(model selection without target labels)."""

from xdomain.evaluate.metrics import accuracy
from xdomain.evaluate.metrics import chunks
from xdomain.evaluate.metrics import classification_metrics
from xdomain.evaluate.metrics import macro_f1
from xdomain.evaluate.metrics import proxy_a_distance
from xdomain.evaluate.metrics import span_f1
from xdomain.evaluate.metrics import tag_names_of
from xdomain.evaluate.metrics import tagging_metrics
from xdomain.evaluate.metrics import token_accuracy

__all__ = [
    "accuracy", "chunks", "classification_metrics", "macro_f1", "proxy_a_distance",
    "span_f1", "tag_names_of", "tagging_metrics", "token_accuracy",
]
