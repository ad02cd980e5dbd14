"""The hook in the trainers people use, end to end on tiny models on the CPU: a Hugging Face ``Trainer``
(GPT-2 and BERT from small configs, random tokens) with NowcastTrainerCallback, reproducing a plain loop's
jumps and weights; a Lightning ``Trainer`` with NowcastCallback, reproducing them too. Both extras are in
``.[dev]``."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import weightspace as ws
from weightspace.nowcast import Nowcaster

transformers = pytest.importorskip("transformers")

V, L, N = 32, 8, 8  # vocabulary, sequence length, sequences


def _gpt2() -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=V, n_embd=8, n_layer=1, n_head=2, n_positions=L, resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg)


def _tokens() -> torch.Tensor:
    return torch.randint(0, V, (N, L), generator=torch.Generator().manual_seed(0))


def _args(tmp_path, steps: int) -> transformers.TrainingArguments:
    # one batch holds the whole data set, in order: every step sees the same batch as the plain loop
    return transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=N, learning_rate=1e-2,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=0.0, optim="adamw_torch", train_sampling_strategy="sequential",
        report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, seed=0, disable_tqdm=True,
        dataloader_num_workers=0)


def test_hf_trainer_reproduces_the_plain_loop(tmp_path, caplog):
    from weightspace.nowcast.hf import NowcastTrainerCallback

    ids = _tokens()
    data = [{"input_ids": row, "labels": row} for row in ids]
    model = _gpt2()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    nc = Nowcaster(kind="linefit", horizons=4)
    cb = NowcastTrainerCallback(nc, period=10, horizon=2)
    trainer = transformers.Trainer(model=model, args=_args(tmp_path, 25), train_dataset=data, callbacks=[cb])
    with caplog.at_level(logging.INFO, logger="weightspace.nowcast.hook"):
        trainer.train()
    h = cb.handle
    # total_steps came from state.max_steps: jumps at 10 and 20 with the fixed horizon, none at the end
    assert h.total_steps == 25 and h.step == 25 and [r["step"] for r in h.history] == [10, 20]
    assert h.jumps == 2 and not h.attached and cb.summary["jumps"] == 2
    assert len(h.losses) == 25  # every training loss was reported (the guard watched both jumps)
    assert all(r["loss_after"] is not None for r in h.history)
    assert any("2 jumps (0 undone" in r.getMessage() for r in caplog.records)

    # the same run as a plain loop: same init, same batch (order within it aside), same optimizer and period
    plain = _gpt2()
    plain.load_state_dict(init)
    plain.train()
    opt = torch.optim.AdamW(plain.parameters(), lr=1e-2, weight_decay=0.0)
    hp = nc.attach(plain, opt, period=10, horizon=2, total_steps=25, example_input=plain.dummy_inputs["input_ids"])
    for _ in range(25):
        loss = plain(input_ids=ids, labels=ids).loss
        hp.report_loss(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert [r["step"] for r in hp.history] == [10, 20] and hp.jumps == 2
    # c_attn holds the attention's key bias, whose gradient is 0 but for rounding: Adam turns the rounding
    # of the two runs' different (fused) loss kernels into steps of up to lr, so it gets a looser tolerance
    for (name, a), b in zip(model.named_parameters(), plain.parameters()):
        tol = 3e-3 if "c_attn" in name else 2e-4
        torch.testing.assert_close(a.detach(), b.detach(), atol=tol, rtol=0, msg=name)
    # sensitivity: without the jumps the weights end elsewhere
    ref = _gpt2()
    ref.load_state_dict(init)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(25):
        ref_opt.zero_grad()
        ref(input_ids=ids, labels=ids).loss.backward()
        ref_opt.step()
    assert (ref.transformer.wte.weight - plain.transformer.wte.weight).abs().max() > 1e-2


def test_hf_trainer_with_a_bert_classifier_and_the_auto_period(tmp_path):
    from weightspace.nowcast.hf import NowcastTrainerCallback

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=V, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=16, max_position_embeddings=L, num_labels=2,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = transformers.BertForSequenceClassification(cfg)
    ids = _tokens()
    data = [{"input_ids": row, "labels": int(row.sum()) % 2} for row in ids]
    cb = NowcastTrainerCallback(Nowcaster(kind="linefit", horizons=4))  # every hook argument by default
    transformers.Trainer(model=model, args=_args(tmp_path, 24), train_dataset=data, callbacks=[cb]).train()
    h = cb.handle
    assert h.auto is not None and h.total_steps == 24 and h.step == 24
    assert h.history and h.history[0]["step"] == 20 and h.history[0]["period"] == 20
    assert cb.summary["steps"] == 24 and all(torch.isfinite(p).all() for p in model.parameters())


def test_hf_callback_on_a_plain_module_converts_the_part_it_is_given(tmp_path):
    from weightspace.nowcast.hf import NowcastTrainerCallback

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(L, 2)

        def forward(self, input_ids, labels=None):
            out = self.lin(input_ids.float())
            if labels is None:
                return {"logits": out}
            return {"loss": nn.functional.cross_entropy(out, labels), "logits": out}

    data = [{"input_ids": row, "labels": int(row.sum()) % 2} for row in _tokens()]
    # the whole model holds a loss torch.fx cannot convert: the error names it; its layer converts alone
    cb = NowcastTrainerCallback(Nowcaster(kind="linefit"), period=10, total_steps=5)
    trainer = transformers.Trainer(model=Plain(), args=_args(tmp_path, 5), train_dataset=data, callbacks=[cb])
    with pytest.raises(ws.UnsupportedModuleError, match="cross_entropy"):
        trainer.train()
    cb = NowcastTrainerCallback(Nowcaster(kind="linefit"), model=lambda m: m.lin, period=5, horizon=1)
    transformers.Trainer(model=Plain(), args=_args(tmp_path, 12), train_dataset=data, callbacks=[cb]).train()
    assert cb.handle.jumps == 2 and len(cb.handle.losses) == 12


def _lightning():
    import importlib.util

    name = "lightning.pytorch" if importlib.util.find_spec("lightning") else "pytorch_lightning"
    return pytest.importorskip(name)


def test_lightning_callback_end_to_end():
    pl = _lightning()
    from weightspace.nowcast.lightning import NowcastCallback

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))

        def training_step(self, batch, _):
            x, y = batch
            return ((self.net(x) - y) ** 2).mean()

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    g = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(64, 6, generator=g), torch.randn(64, 3, generator=g))
    cb = NowcastCallback(Nowcaster(kind="linefit"), period=5, horizon=2, model=lambda m: m.net)
    trainer = pl.Trainer(max_epochs=3, callbacks=[cb], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(Module(), torch.utils.data.DataLoader(ds, batch_size=8))
    h = cb.handle
    # 3 epochs of 8 batches: total_steps 24 from the trainer's estimate; jumps at 5, 10, 15, 20
    assert h.total_steps == 24 and h.step == 24 and [r["step"] for r in h.history] == [5, 10, 15, 20]
    assert not h.attached and cb.summary["jumps"] + cb.summary["undone"] == 4
    assert len(h.losses) == 24 and all(r["loss_after"] is not None for r in h.history)
    # the same run as a plain loop: same init, batches in the same order, same jumps and weights
    plain = Module().net
    opt = torch.optim.Adam(plain.parameters(), lr=1e-2)
    hp = Nowcaster(kind="linefit").attach(plain, opt, period=5, horizon=2, total_steps=24)
    for _ in range(3):
        for x, y in torch.utils.data.DataLoader(ds, batch_size=8):
            loss = ((plain(x) - y) ** 2).mean()
            hp.report_loss(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert [(r["step"], r["undone"]) for r in hp.history] == [(r["step"], r["undone"]) for r in h.history]
    net = trainer.lightning_module.net
    for a, b in zip(net.parameters(), plain.parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), atol=1e-6, rtol=1e-5)


def test_lightning_total_steps_falls_back_to_a_step_scheduler():
    _lightning()
    from types import SimpleNamespace

    from weightspace.nowcast.lightning import trainer_total_steps

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1)
    one = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=300)
    step = SimpleNamespace(interval="step", scheduler=one)
    epoch = SimpleNamespace(interval="epoch", scheduler=one)
    assert trainer_total_steps(SimpleNamespace(estimated_stepping_batches=120, lr_scheduler_configs=[step])) == 120
    assert trainer_total_steps(SimpleNamespace(estimated_stepping_batches=float("inf"),
                                               lr_scheduler_configs=[step])) == 300
    assert trainer_total_steps(SimpleNamespace(estimated_stepping_batches=float("inf"),
                                               lr_scheduler_configs=[epoch])) is None
