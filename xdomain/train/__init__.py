"""The training engine: the experiment, train state, pure steps, checkpoints, loop."""

from xdomain.train.experiment import Experiment
from xdomain.train.loop import NonFiniteLossError
from xdomain.train.loop import train_and_evaluate

__all__ = ["Experiment", "NonFiniteLossError", "train_and_evaluate"]
