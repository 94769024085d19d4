"""Cross-domain data: the shipped domains (tfds builders) and the loaders.

Image domains (digits/...) and text domains (sentiment/..., topics/...,
brown/..., ner/wnut16) share one registry (`registry.DOMAINS`) and one
`DomainInfo`; conll:<path> names a user's CoNLL files (`conll.py`):

>>> from xdomain import data
>>> data.list_domains()[:3]
['brown/adventure', 'brown/belles_lettres', 'brown/editorial']
>>> data.domain_info('brown/news').task
'tagging'
"""

from xdomain.data.domains import DOMAINS
from xdomain.data.domains import DomainInfo
from xdomain.data.domains import DomainSpec
from xdomain.data.domains import SPLITS
from xdomain.data.domains import domain_info
from xdomain.data.domains import list_domains
from xdomain.data.domains import load_domain
from xdomain.data.loader import CrossDomainLoader
from xdomain.data.loader import Preprocessor
from xdomain.data.loader import eval_batches
from xdomain.data.loader import num_eval_batches
from xdomain.data.preprocess import ImagePreprocess

__all__ = [
    "DOMAINS", "DomainInfo", "DomainSpec", "SPLITS", "domain_info", "list_domains",
    "load_domain", "CrossDomainLoader", "Preprocessor", "eval_batches", "num_eval_batches",
    "ImagePreprocess",
]
