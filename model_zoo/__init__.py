"""model_zoo: populations of trained networks as data.

Generate zoos with a batched trainer (:func:`generate`) on embedded datasets or your own data
(:func:`load_data`: tensors, torch Datasets, ``.npz`` files, image folders, MNIST/Fashion-MNIST/
CIFAR/SVHN files from a local root), store them in the format of ``docs/concepts/zoo-format.md``, read them back
(:func:`load` -> :class:`Zoo`) and import the zoos the field publishes (:func:`import_small_cnn_zoo`,
:func:`import_state_dicts`).
"""

from .archs import (
    MLP,
    ArchConfigError,
    SmallCNN,
    SmallResNet,
    TinyViT,
    UntrustedTargetError,
    instantiate,
    register_arch,
)
from .data import Dataset, load_dataset
from .dataset import ZooGraphDataset, split_runs
from .datasets import DataMismatchError, DataSourceError, fingerprint, load_data
from .generator import ZooExistsError, generate
from .importers import import_small_cnn_zoo, import_state_dicts
from .lock import ZooLockedError
from .sampling import RunConfig, sample_runs
from .store import ZooFormatError, ZooWriteError
from .trainer import TrainerConfig, train_group
from .zoo import MetricsTable, Zoo, load

__all__ = [
    "load",
    "Zoo",
    "MetricsTable",
    "generate",
    "import_small_cnn_zoo",
    "import_state_dicts",
    "ZooGraphDataset",
    "split_runs",
    "load_dataset",
    "load_data",
    "fingerprint",
    "Dataset",
    "sample_runs",
    "RunConfig",
    "train_group",
    "TrainerConfig",
    "instantiate",
    "MLP",
    "SmallCNN",
    "SmallResNet",
    "TinyViT",
    "ZooFormatError",
    "ZooExistsError",
    "ZooLockedError",
    "ZooWriteError",
    "DataSourceError",
    "DataMismatchError",
    "UntrustedTargetError",
    "ArchConfigError",
    "register_arch",
]
