"""The training engine: train state, pure steps, sharding, checkpoints, loop."""

from xdomain.train.loop import NonFiniteLossError
from xdomain.train.loop import train_and_evaluate

__all__ = ["NonFiniteLossError", "train_and_evaluate"]
