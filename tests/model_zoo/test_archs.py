import pytest
import torch

import weightspace as ws
from model_zoo.archs import MLP, SmallCNN, SmallResNet, TinyViT, instantiate, resolve_target

CASES = [
    ({"_target_": "model_zoo.archs.MLP", "depth": 2, "width": [8, 4]}, (3, 64)),
    ({"_target_": "model_zoo.archs.SmallCNN", "channels": 4, "strides": 2}, (3, 1, 8, 8)),
    ({"_target_": "model_zoo.archs.SmallCNN", "channels": [4, 6], "dims": 1, "kernel_size": 5}, (3, 1, 40)),
    ({"_target_": "model_zoo.archs.SmallResNet", "width": 4, "blocks": [1, 1]}, (3, 1, 8, 8)),
    ({"_target_": "model_zoo.archs.TinyViT", "dim": 8}, (3, 1, 8, 8)),
    ({"_target_": "model_zoo.archs.TinyViT", "dim": 8, "dims": 1, "image_size": 40, "patch": 4}, (3, 1, 40)),
]


@pytest.mark.parametrize("config,shape", CASES)
def test_family_forward_and_graph_round_trip(config, shape):
    torch.manual_seed(0)
    model = instantiate(config).eval()
    x = torch.rand(*shape)
    assert model(x).shape == (shape[0], 10)
    try:
        spec = ws.GraphSpec.from_module(model)
    except ws.UnsupportedModuleError:
        spec = ws.GraphSpec.from_module(model, example_input=(x[:1],))
    sd = model.state_dict()
    back = spec.to_state_dict(spec.to_graph(sd))
    for k in spec.names:
        torch.testing.assert_close(back[k], sd[k], rtol=0, atol=0)


def test_small_cnn_zoo_shape():
    m = SmallCNN()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias",
                     "features.4.weight", "features.4.bias", "head.weight", "head.bias"]
    assert m.features[0].weight.shape == (16, 1, 3, 3)


def test_instantiate_overrides_and_classes():
    assert isinstance(instantiate({"_target_": "model_zoo.archs.MLP"}, depth=0), MLP)
    assert resolve_target("model_zoo.archs.SmallResNet") is SmallResNet
    assert isinstance(instantiate({"_target_": "model_zoo.archs.TinyViT"}), TinyViT)


def test_instantiate_errors():
    with pytest.raises(ValueError, match="needs a '_target_' key"):
        instantiate({"depth": 2})
    with pytest.raises(ValueError, match="cannot resolve _target_ 'model_zoo.archs.Nope'"):
        instantiate({"_target_": "model_zoo.archs.Nope"})
    with pytest.raises(ValueError, match="dotted path"):
        instantiate({"_target_": "MLP"})


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown activation 'swishy'"):
        MLP(activation="swishy")
    with pytest.raises(ValueError, match="strides has 2 entries for 3 conv layers"):
        SmallCNN(strides=[1, 2])
    with pytest.raises(ValueError, match="not a multiple of patch"):
        TinyViT(image_size=8, patch=3)
