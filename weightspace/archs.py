"""Architecture families of the model zoos, each rebuilt from a Hydra-style ``_target_`` dict.

``instantiate({"_target_": "model_zoo.archs.MLP", ...})`` builds a model without importing Hydra,
so a zoo row names everything needed to rebuild its network (``model_zoo.archs`` re-exports these
classes, and zoo files name them by that path). Families: :class:`MLP`,
:class:`SmallCNN` (the Small CNN Zoo shape: conv layers, global average pooling, one linear
layer; 1-D or 2-D), :class:`SmallResNet` (BasicBlocks with BatchNorm) and :class:`TinyViT`
(patch embedding + ``nn.TransformerEncoder``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["MLP", "SmallCNN", "SmallResNet", "BasicBlock", "TinyViT", "ACTIVATIONS", "make_activation"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module of :data:`ACTIVATIONS` by name."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None




class MLP(nn.Module):
    r"""Fully connected network: ``depth`` hidden layers of ``width`` units.

    Args:
        in_features: input size (64 for digits, 40 for MNIST-1D).
        num_outputs: classes or regression outputs.
        depth: number of hidden layers (0 gives a linear model).
        width: units per hidden layer (an int, or one int per layer for heterogeneous widths).
        activation: a key of :data:`ACTIVATIONS`.

    Shapes:
        input ``[B, in_features]`` (any trailing shape is flattened) -> output ``[B, num_outputs]``.
    """

    def __init__(self, in_features: int = 64, num_outputs: int = 10, depth: int = 2,
                 width: int | Sequence[int] = 32, activation: str = "relu") -> None:
        super().__init__()
        widths = [int(width)] * depth if isinstance(width, int) else [int(w) for w in width]
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for w in widths:
            layers += [nn.Linear(prev, w), make_activation(activation)]
            prev = w
        layers.append(nn.Linear(prev, num_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    r"""Conv layers + global average pooling + one linear layer (Unterthiner et al. 2020,
    "Predicting Neural Network Accuracy from Weights", the Small CNN Zoo shape).

    Args:
        in_channels: input channels (1 for digits and MNIST-1D).
        num_classes: outputs.
        channels: channels per conv layer (int or list).
        layers: conv layers when ``channels`` is an int.
        kernel_size: conv kernel size.
        strides: stride per layer (int or list).
        activation: a key of :data:`ACTIVATIONS`.
        dims: 2 for images ``[B, C, H, W]``, 1 for sequences ``[B, C, L]``.

    Shapes:
        input ``[B, C, H, W]`` (or ``[B, C, L]``) -> output ``[B, num_classes]``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, channels: int | Sequence[int] = 16,
                 layers: int = 3, kernel_size: int = 3, strides: int | Sequence[int] = 1,
                 activation: str = "relu", dims: int = 2) -> None:
        super().__init__()
        chans = [int(channels)] * layers if isinstance(channels, int) else [int(c) for c in channels]
        strides = [int(strides)] * len(chans) if isinstance(strides, int) else [int(s) for s in strides]
        if len(strides) != len(chans):
            raise ValueError(f"strides has {len(strides)} entries for {len(chans)} conv layers")
        if dims not in (1, 2):
            raise ValueError(f"dims must be 1 or 2, got {dims}")
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        self.dims = dims
        mods: list[nn.Module] = []
        prev = in_channels
        for c, s in zip(chans, strides):
            mods += [conv(prev, c, kernel_size, stride=s, padding=kernel_size // 2), make_activation(activation)]
            prev = c
        self.features = nn.Sequential(*mods)
        self.head = nn.Linear(prev, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.features(x)
        h = h.mean(dim=(2, 3)) if self.dims == 2 else h.mean(dim=2)
        return self.head(h)


class BasicBlock(nn.Module):
    """Two 3×3 convs with BatchNorm and an identity (or 1×1 projection) shortcut (He et al. 2016)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, activation: str = "relu") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = make_activation(activation)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = make_activation(activation)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.act1(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return self.act2(h + self.shortcut(x))


class SmallResNet(nn.Module):
    r"""A small ResNet: stem conv + BasicBlocks + global average pooling + linear (He et al. 2016).

    Args:
        in_channels: input channels.
        num_classes: outputs.
        width: channels of the stem and the first stage (doubled at each later stage).
        blocks: BasicBlocks per stage (list; the stage count is its length).
        activation: a key of :data:`ACTIVATIONS`.

    Shapes:
        input ``[B, C, H, W]`` -> output ``[B, num_classes]``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 8,
                 blocks: Sequence[int] = (1, 1), activation: str = "relu") -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), make_activation(activation))
        stages: list[nn.Module] = []
        prev = width
        for i, n in enumerate(blocks):
            cout = width * 2**i
            for j in range(int(n)):
                stages.append(BasicBlock(prev, cout, 2 if (i > 0 and j == 0) else 1, activation))
                prev = cout
        self.blocks = nn.Sequential(*stages)
        self.head = nn.Linear(prev, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class TinyViT(nn.Module):
    r"""A tiny Vision Transformer (Dosovitskiy et al. 2021) over non-overlapping patches.

    Digits ``[B, 1, 8, 8]`` are cut into ``patch×patch`` squares; MNIST-1D ``[B, 1, L]`` into
    segments of ``patch`` samples. Learned positional embeddings, mean pooling over tokens.

    Args:
        in_channels: input channels.
        num_classes: outputs.
        image_size: side (2-D) or length (1-D) of the input.
        patch: patch side / segment length.
        dim: token width; heads: attention heads; depth: encoder layers; mlp_ratio: MLP width / dim.
        dims: 2 for images, 1 for sequences.
        activation: ``relu`` or ``gelu`` (the encoder layer's activation).

    Shapes:
        input ``[B, C, H, W]`` or ``[B, C, L]`` -> output ``[B, num_classes]``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 8, patch: int = 2,
                 dim: int = 16, heads: int = 2, depth: int = 1, mlp_ratio: int = 2, dims: int = 2,
                 activation: str = "gelu") -> None:
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size {image_size} is not a multiple of patch {patch}")
        if activation not in ("relu", "gelu"):
            raise ValueError(f"TinyViT supports activation 'relu' or 'gelu', got {activation!r}")
        self.dims, self.patch, self.image_size, self.in_channels = dims, patch, image_size, in_channels
        tokens = (image_size // patch) ** dims
        self.embed = nn.Linear(in_channels * patch**dims, dim)
        self.pos = nn.Parameter(torch.zeros(tokens, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, dim * mlp_ratio, dropout=0.0, activation=activation,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        p, n, c = self.patch, self.image_size // self.patch, self.in_channels
        if self.dims == 2:
            x = x.reshape(-1, c, n, p, n, p).permute(0, 2, 4, 1, 3, 5).reshape(-1, n * n, c * p * p)
        else:
            x = x.reshape(-1, c, n, p).permute(0, 2, 1, 3).reshape(-1, n, c * p)
        h = self.encoder(self.embed(x) + self.pos)
        return self.head(h.mean(dim=1))
