"""Flax Linen models for cross-domain learning: CNNs, scan-based RNNs, heads.

Every classifier/tagger has a `backbone` (features) and a `head` submodule, so
parameter paths start with `backbone/` or `head/`, and is called as
`model.apply(variables, *inputs, train=bool, return_features=False, rngs=...,
mutable=...)` with inputs `(images,)` float32 [B, H, W, C] for image models and
`(tokens, lengths)` for text models. Dropout uses the 'dropout' rng; batch norm
keeps 'batch_stats' (mutable when training).
"""

from xdomain.models.cnn import DOMAINS
from xdomain.models.cnn import DomainBatchNorm
from xdomain.models.cnn import ResNet
from xdomain.models.cnn import SeedCNN
from xdomain.models.crf import CRF
from xdomain.models.crf import crf_decode
from xdomain.models.crf import crf_log_likelihood
from xdomain.models.crf import crf_log_partition
from xdomain.models.crf import crf_sequence_score
from xdomain.models.heads import ClassifierHead
from xdomain.models.heads import DomainDiscriminator
from xdomain.models.recurrent import CELLS
from xdomain.models.recurrent import GRU
from xdomain.models.recurrent import LSTM
from xdomain.models.recurrent import RNNEncoder
from xdomain.models.text import CharCNN
from xdomain.models.text import POOLINGS
from xdomain.models.text import RNNClassifier
from xdomain.models.text import RNNTagger
from xdomain.models.text import RowRNNClassifier
from xdomain.models.text import TextCNN
from xdomain.models.text import masked_max
from xdomain.models.text import masked_mean
