import pytest
import torch
from torch_geometric.loader import DataLoader

import weightspace as ws
from model_zoo.dataset import ZooGraphDataset, split_runs


def test_split_runs_partition():
    s = split_runs(20, (0.6, 0.2, 0.2), seed=1)
    assert sorted(s["train"] + s["val"] + s["test"]) == list(range(20))
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (12, 4, 4)
    assert split_runs(20, (0.6, 0.2, 0.2), seed=1) == s != split_runs(20, (0.6, 0.2, 0.2), seed=2)


def test_splits_by_run_with_all_checkpoints(small_zoo):
    parts = {s: small_zoo.graph_dataset(split=s, checkpoints="all", fractions=(0.5, 0.25, 0.25)) for s in
             ("train", "val", "test")}
    runs = {s: {r for r, _, _ in ds.items} for s, ds in parts.items()}
    assert not runs["train"] & runs["val"] and not runs["train"] & runs["test"] and not runs["val"] & runs["test"]
    assert sum(len(ds) for ds in parts.values()) == len(small_zoo.metrics)
    g = parts["train"][0]
    assert isinstance(g, ws.ParameterGraph)
    run, step = int(g.run), int(g.step)
    row = small_zoo.rows(run)
    assert float(g.y) == pytest.approx(float(row["test_accuracy"][list(row["step"]).index(step)]))


def test_final_targets_and_loader(small_zoo):
    ds = small_zoo.graph_dataset(target="config.lr")
    assert len(ds) == len(small_zoo)
    lrs = small_zoo.final_metrics()["config.lr"]
    assert float(ds[3].y) == pytest.approx(float(lrs[3]), rel=1e-6)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch.num_graphs == 4 and batch.y.shape == (4,)


def test_checkpoint_selection_and_trajectory(small_zoo):
    ds = small_zoo.graph_dataset(checkpoints=[0])
    assert all(steps == [0] for _, steps, _ in ds.items)
    traj = small_zoo.graph_dataset(trajectory=True, checkpoints="all")
    g = traj[0]
    assert g.x.shape[0] == 3 and g.edge_attr.shape[0] == 3 and g.y.shape == (3,)


def test_nonfinite_runs_are_dropped(small_zoo, monkeypatch):
    real = small_zoo.trajectory

    def poisoned(i):
        t = real(i)
        if i == 4:
            t = {k: v.clone() for k, v in t.items()}
            t["net.1.weight"][-1, 0, 0] = float("nan")
        return t

    monkeypatch.setattr(small_zoo, "trajectory", poisoned)
    ds = small_zoo.graph_dataset()
    assert ds.dropped == 1 and 4 not in {r for r, _, _ in ds.items}
    strict = small_zoo.graph_dataset(nonfinite="raise")
    k = [r for r, _, _ in strict.items].index(4)
    with pytest.raises(ws.NonFiniteWeightsError, match="net.1.weight"):
        strict[k]


@pytest.mark.parametrize("kwargs,err,message", [
    ({"target": "acc"}, KeyError, "unknown target 'acc'"),
    ({"split": "dev"}, ValueError, "split must be one of"),
    ({"checkpoints": "last"}, ValueError, "checkpoints must be 'final', 'all' or a list"),
    ({"nonfinite": "zero"}, ValueError, "nonfinite must be 'drop' or 'raise'"),
    ({"split": "train", "fractions": (0.5, 0.5)}, ValueError, "three non-negative numbers summing to 1"),
])
def test_bad_arguments(small_zoo, kwargs, err, message):
    with pytest.raises(err, match=message):
        ZooGraphDataset(small_zoo, **kwargs)


def test_graph_round_trip_of_items(small_zoo):
    g = small_zoo.graph_dataset(checkpoints="all")[5]
    run, step = int(g.run), int(g.step)
    sd = small_zoo.graph_spec(run).to_state_dict(g)
    torch.testing.assert_close(sd["net.3.weight"], small_zoo.state_dict(run, step)["net.3.weight"], rtol=0, atol=0)
