import csv

import pytest
import torch

from visem.models import EmbeddingModel, NonFiniteError, build_model
from visem.train import BatchSampler, MultiSampler, TrainConfig, Trainer, load_checkpoint, save_checkpoint
from visem.train.checkpoint import CheckpointError, load_weights


def _setup(steps=20, seed=0, **kw):
    g = torch.Generator().manual_seed(1)
    data = {"image": torch.randn(50, 6, generator=g), "text": torch.randn(50, 4, generator=g)}
    torch.manual_seed(seed)
    model = build_model("linear-vse", {"image_dim": 6, "text_dim": 4, "embed_dim": 3})
    cfg = TrainConfig(steps=steps, batch_size=16, lr=1e-2, seed=seed, log_every=3, checkpoint_every=5,
                      progress=False, **kw)
    return model, BatchSampler(data, cfg.batch_size, seed=seed), cfg


class Crash(RuntimeError):
    pass


def test_killed_run_resumes_to_the_same_weights_and_log(tmp_path):
    model, sampler, cfg = _setup()
    Trainer(model, sampler, cfg, tmp_path / "straight").fit()

    model2, sampler2, cfg2 = _setup()

    def crash(step, terms):
        if step == 13:  # after the checkpoint at step 10, before the one at 15
            raise Crash()

    with pytest.raises(Crash):
        Trainer(model2, sampler2, cfg2, tmp_path / "resumed", on_step=crash).fit()
    # a new process: fresh model and sampler objects, the same run directory
    model3, sampler3, cfg3 = _setup()
    Trainer(model3, sampler3, cfg3, tmp_path / "resumed").fit()

    for (k, a), b in zip(model.state_dict().items(), model3.state_dict().values()):
        assert torch.equal(a, b), k
    straight = (tmp_path / "straight" / "metrics.csv").read_text()
    resumed = (tmp_path / "resumed" / "metrics.csv").read_text()
    assert straight == resumed
    steps = [int(r["step"]) for r in csv.DictReader(straight.splitlines())]
    assert steps == [3, 6, 9, 12, 15, 18, 20]


def test_finished_run_is_not_trained_again(tmp_path):
    model, sampler, cfg = _setup(steps=5)
    Trainer(model, sampler, cfg, tmp_path).fit()
    calls = []
    model2, sampler2, _ = _setup(steps=5)
    Trainer(model2, sampler2, cfg, tmp_path, on_step=lambda s, t: calls.append(s)).fit()
    assert calls == []
    assert torch.equal(model.img_proj.weight, model2.img_proj.weight)


class Diverging(EmbeddingModel):
    """A model whose loss becomes NaN at its fourth step."""

    def __init__(self):
        super().__init__(None)
        self.w = torch.nn.Parameter(torch.ones(1))
        self.calls = 0

    def loss(self, batch, progress=0.0):
        self.calls += 1
        value = (self.w * batch["x"]).mean()
        if self.calls == 4:
            value = value * float("nan")
        return {"loss": value, "kl": value.detach()}


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    model = Diverging()
    cfg = TrainConfig(steps=10, batch_size=2, checkpoint_every=2, progress=False)
    sampler = BatchSampler({"x": torch.ones(6)}, 2)
    with pytest.raises(NonFiniteError, match=r"step 4: non-finite loss term\(s\): loss=nan, kl=nan.*checkpoint"):
        Trainer(model, sampler, cfg, tmp_path).fit()
    assert torch.isfinite(model.w).all()


def test_lr_decay_applies_from_its_step():
    model, sampler, cfg = _setup(steps=6, lr_decay_step=4, lr_decay=0.1)
    seen = []
    trainer = Trainer(model, sampler, cfg, on_step=lambda s, t: seen.append(trainer.optimizers[0].param_groups[0]["lr"]))
    trainer.fit()
    assert seen == pytest.approx([1e-2] * 4 + [1e-3] * 2)


def test_checkpoint_round_trip_restores_optimizer_state(tmp_path):
    model, sampler, cfg = _setup(steps=4)
    trainer = Trainer(model, sampler, cfg)
    trainer.fit()
    save_checkpoint(tmp_path / "c.safetensors", model, trainer.optimizers, {"step": 4, "x": [1, 2]})
    model2, _, _ = _setup(steps=4, seed=5)
    opt2 = model2.make_optimizers(1e-2)
    meta = load_checkpoint(tmp_path / "c.safetensors", model2, opt2)
    assert meta == {"step": 4, "x": [1, 2]}
    s1, s2 = trainer.optimizers[0].state_dict(), opt2[0].state_dict()
    for pid in s1["state"]:
        for key, v in s1["state"][pid].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(s2["state"][pid][key]))
    assert s1["param_groups"] == s2["param_groups"]


def test_checkpoint_errors_name_the_file(tmp_path):
    model, _, _ = _setup()
    with pytest.raises(CheckpointError, match="does not exist"):
        load_weights(tmp_path / "none.safetensors", model)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_weights(bad, model)
    other = build_model("linear-vse", {"image_dim": 9, "text_dim": 4, "embed_dim": 3})
    save_checkpoint(tmp_path / "o.safetensors", other)
    with pytest.raises(CheckpointError, match=r"img_proj.weight has shape \(3, 9\)"):
        load_checkpoint(tmp_path / "o.safetensors", model)


def test_sampler_state_reproduces_the_stream():
    data = {"a": torch.arange(10)}
    s = BatchSampler(data, 4, seed=3)
    first = [next(s)["a"] for _ in range(3)]
    state = s.state_dict()
    rest = [next(s)["a"] for _ in range(5)]
    s2 = BatchSampler(data, 4, seed=3)
    s2.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(rest, [next(s2)["a"] for _ in range(5)]))
    # every epoch covers distinct rows (drop_last: 2 batches of 4 out of 10)
    assert len(set(torch.cat(first[:2]).tolist())) == 8


def test_sampler_rejects_misaligned_tensors_and_multisampler_prefixes():
    with pytest.raises(ValueError, match="share their first dimension"):
        BatchSampler({"a": torch.zeros(3), "b": torch.zeros(4)}, 2)
    m = MultiSampler({"src": BatchSampler({"x": torch.zeros(6, 2)}, 3), "tgt": BatchSampler({"x": torch.ones(4, 2)}, 2)})
    batch = next(m)
    assert set(batch) == {"src.x", "tgt.x"} and batch["src.x"].shape == (3, 2) and batch["tgt.x"].shape == (2, 2)
    state = m.state_dict()
    m.load_state_dict(state)
    assert m.state_dict() == state


def test_model_selection_keeps_the_best_validated_weights(tmp_path):
    model, sampler, cfg = _setup(steps=12)
    scores = iter([1.0, 5.0, 2.0, 3.0])  # validated at steps 3, 6, 9, 12: the best is at step 6
    snapshots = {}

    def score(m):
        snapshots[len(snapshots)] = {k: v.clone() for k, v in m.state_dict().items()}
        return next(scores)

    trainer = Trainer(model, sampler, cfg, tmp_path, select=(score, 3))
    trainer.fit()
    assert trainer.best == {"step": 6, "score": 5.0}
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[1][k]), k
    assert load_weights(tmp_path / "best.safetensors", model) == {"step": 6, "score": 5.0}
    assert "best_val" in (tmp_path / "metrics.csv").read_text().splitlines()[0]
    with pytest.raises(ValueError, match="validate every"):
        Trainer(model, sampler, cfg, select=(score, 0))


def test_share_probe_measures_the_terms_before_and_after_training(tmp_path):
    import json

    model, sampler, cfg = _setup(steps=6)
    state = sampler.state_dict()
    trainer = Trainer(model, sampler, cfg, tmp_path, share_probe=True)
    assert sampler.state_dict() == state  # the probe batch is not taken from training
    trainer.fit()
    assert set(trainer.shares) == {"start", "end"}
    assert trainer.shares["start"] == {"ranking": 1.0}  # one term carries all the gradient
    assert json.loads((tmp_path / "shares.json").read_text()) == trainer.shares
    # measuring leaves the training trajectory alone
    model2, sampler2, cfg2 = _setup(steps=6)
    Trainer(model2, sampler2, cfg2).fit()
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)


def test_share_probe_without_any_gradient_gives_zero_shares_not_an_error(tmp_path):
    """A hinge met by every pair of the probe batch has no gradient: the run goes on, the shares are 0."""
    from visem.experiments.retrieval import mean_shares
    from visem.models.base import Objective

    model, sampler, cfg = _setup(steps=4)
    real = model.objective
    # a term times zero keeps its graph and has a zero gradient, as a satisfied hinge
    model.objective = lambda batch, progress=0.0: Objective(
        {k: v * 0.0 for k, v in real(batch, progress).terms.items()})
    trainer = Trainer(model, sampler, cfg, tmp_path, share_probe=True)
    trainer.fit()
    assert trainer.shares == {"start": {"ranking": 0.0}, "end": {"ranking": 0.0}}
    # the mean over seeds leaves such a probe out
    assert mean_shares([trainer.shares, {"start": {"ranking": 1.0}}]) == {"start": {"ranking": 1.0}}
