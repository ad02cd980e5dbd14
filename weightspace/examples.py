"""Built-in example networks: the shapes the converter must handle, small enough for a demo.

Each builder returns ``(model, example_input)``. :class:`ResNet` (stages of the zoo family's
:class:`~weightspace.archs.BasicBlock`) and :class:`ClassTokenViT` exercise nesting, skip
connections with a projection shortcut, raw ``nn.Parameter`` tokens and positional tables.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from weightspace.archs import BasicBlock

__all__ = ["ResNet", "ClassTokenViT", "EXAMPLES", "build_example", "resnet18"]


class ResNet(nn.Module):
    """A ResNet of :class:`~weightspace.archs.BasicBlock` stages with global average pooling and a linear head."""

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (8, 16), blocks: tuple[int, ...] = (1, 1),
                 num_classes: int = 10, stem_kernel: int = 3):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], stem_kernel, 1, stem_kernel // 2, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        layers, c = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(BasicBlock(c, w, stride=2 if (i > 0 and j == 0) else 1, activation="relu"))
                c = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet18(num_classes: int = 10, in_channels: int = 3, stem_kernel: int = 3) -> ResNet:
    """ResNet-18 built from :class:`~weightspace.archs.BasicBlock` (11.2M parameters with the CIFAR-style 3x3 stem
    and 10 classes). Edges keep their own kernel size, so a 7x7 stem does not widen the other edges
    (``docs/design-notes/converter.md``)."""
    return ResNet(in_channels, (64, 128, 256, 512), (2, 2, 2, 2), num_classes, stem_kernel=stem_kernel)


class ClassTokenViT(nn.Module):
    """A small ViT (Dosovitskiy et al., 2021): conv patch embedding, a class token and a
    positional table as raw ``nn.Parameter``s, ``nn.TransformerEncoderLayer`` blocks."""

    def __init__(self, image: int = 8, patch: int = 4, dim: int = 16, depth: int = 2, heads: int = 2,
                 num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        n = (image // patch) ** 2
        self.patch = nn.Conv2d(in_channels, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


class _TokenClassifier(nn.Module):
    def __init__(self, vocab: int = 20, dim: int = 16, heads: int = 2, num_classes: int = 4):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(dim, heads, 32, dropout=0.0, batch_first=True), num_layers=2,
            enable_nested_tensor=False,
        )
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.head(self.encoder(self.embed(tokens)).mean(1))


def _mlp() -> tuple[nn.Module, Tensor]:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 10)), torch.rand(2, 64)


def _cnn() -> tuple[nn.Module, Tensor]:
    m = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )
    return m, torch.rand(2, 1, 8, 8)


def _cnn_flatten() -> tuple[nn.Module, Tensor]:
    m = nn.Sequential(
        nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 6, 1, groups=6),
        nn.Flatten(), nn.Dropout(0.1), nn.Linear(6 * 3 * 3, 10),
    )
    return m, torch.rand(2, 1, 8, 8)


def _conv1d() -> tuple[nn.Module, Tensor]:
    m = nn.Sequential(
        nn.Conv1d(1, 8, 5, padding=2), nn.GELU(), nn.Conv1d(8, 8, 3, dilation=2, padding=2), nn.SiLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 10),
    )
    return m, torch.rand(2, 1, 40)


EXAMPLES: dict[str, Callable[[], tuple[nn.Module, Tensor]]] = {
    "mlp": _mlp,
    "cnn_gap": _cnn,
    "cnn_flatten_bn": _cnn_flatten,
    "conv1d": _conv1d,
    "resnet": lambda: (ResNet(), torch.rand(2, 1, 8, 8)),
    "vit": lambda: (ClassTokenViT(), torch.rand(2, 1, 8, 8)),
    "transformer": lambda: (_TokenClassifier(), torch.randint(0, 20, (2, 7))),
}


def build_example(name: str, seed: int = 0) -> tuple[nn.Module, Tensor]:
    """Build example ``name`` (a key of :data:`EXAMPLES`) with seeded weights, in eval mode."""
    if name not in EXAMPLES:
        raise KeyError(f"unknown example {name!r}; choose from {sorted(EXAMPLES)}")
    torch.manual_seed(seed)
    model, x = EXAMPLES[name]()
    return model.eval(), x
