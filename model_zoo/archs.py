"""Architecture families of the zoo (defined in :mod:`weightspace.archs`), by the import path that zoo
files record: ``{"_target_": "model_zoo.archs.MLP", ...}``."""

from weightspace.archs import ACTIVATIONS, MLP, BasicBlock, SmallCNN, SmallResNet, TinyViT, make_activation
from weightspace.instantiate import (
           ArchConfigError,
           UntrustedTargetError,
           instantiate,
           register_arch,
           resolve_target,
)

__all__ = ["MLP", "SmallCNN", "SmallResNet", "BasicBlock", "TinyViT", "ACTIVATIONS", "make_activation", "instantiate",
           "resolve_target", "register_arch", "UntrustedTargetError", "ArchConfigError"]
