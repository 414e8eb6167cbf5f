"""Audio folders (and MNIST) -> WebDataset tar shards for SaShiMi training.

Never imports the model code (``sashimi``) or Ray; torch/torchaudio only for resampling.
Public entry points: ``shard_folder``, ``make_demo_corpus``, ``load_manifest``,
``shard_paths`` and the sample schema in ``data_prep.schema``.
"""
from .demo import make_demo_corpus
from .manifest import load_manifest, shard_paths
from .shard import shard_folder

__all__ = ["make_demo_corpus", "load_manifest", "shard_paths", "shard_folder"]
