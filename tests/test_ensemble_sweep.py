"""The ensemble over a split attacks, member by member, only what is still robust, and loses nothing by it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cfjax import attacks, evaluate, parallel
from cfjax.kinds import Readout
from cfjax.models import ResNetClassifier
from cfjax.robustness.ensemble_sweep import EnsembleSweep

SMALL = dict(iterations=4, targets=2, queries=20)


@pytest.fixture(scope="module")
def model():
    network = ResNetClassifier(num_outputs=3, widths=(4, 8))
    images = np.asarray(jax.random.uniform(jax.random.PRNGKey(2), (20, 16, 16, 3)))
    params = network.init(jax.random.PRNGKey(0), images[:1])["params"]
    apply_fn = jax.jit(lambda p, x: network.apply({"params": p}, x))
    readout = Readout("cnn", apply_fn, params, num_classes=3)
    return readout, {"image": images, "label": np.arange(20, dtype=np.int32) % 3}


def sweep(model, **spec_fields) -> EnsembleSweep:
    readout, data = model
    spec = attacks.EnsembleSpec(num_classes=3, **{**SMALL, **spec_fields})
    return EnsembleSweep(spec, readout, data, batch_size=8, mesh=parallel.make_mesh(),
                         source_clean_logits=np.asarray(readout.apply_fn(readout.params, data["image"])),
                         score_fn=lambda images: np.asarray(readout.apply_fn(readout.params, images)))


def test_each_member_attacks_only_what_the_earlier_ones_left(model):
    readout, data = model
    ensemble = sweep(model)
    names = attacks.member_names(ensemble.spec)
    out = ensemble.run(jax.random.PRNGKey(4), 4 / 255)
    broken = [int(np.sum(out["broken_by"] == i)) for i in range(len(names))]
    assert 0 < sum(broken) < len(data["label"])  # a split with both outcomes
    assert out["attempted"][0] == len(data["label"])
    for index in range(1, len(names)):  # what is left after the clean image and every earlier member
        assert out["attempted"][index] == out["attempted"][index - 1] - broken[index - 1], names[index]
    wrong = np.argmax(out["logits"], -1) != data["label"]
    np.testing.assert_array_equal(wrong, out["broken_by"] >= 0)  # every reported break is real, none missed
    assert out["distance"].max() <= 4 / 255 + 1e-6
    np.testing.assert_array_equal(out["distance"][out["broken_by"] <= 0], 0.0)  # robust or clean-wrong: untouched


def test_a_sweep_resumed_from_any_batch_finds_what_an_uninterrupted_one_finds(model, monkeypatch):
    ensemble, key = sweep(model), jax.random.PRNGKey(4)
    states = []
    whole = ensemble.run(key, 4 / 255, save=lambda state: states.append(
        {name: np.array(value, copy=True) for name, value in state.items()}))
    assert len({int(state["member"]) for state in states}) >= 2  # batches of several members were saved
    batches = []  # one saved state per batch: a resumed sweep runs only the batches after its state's
    original = evaluate.SplitEvaluator.run
    monkeypatch.setattr(evaluate.SplitEvaluator, "run",
                        lambda self, *args, **kw: batches.append(1) or original(self, *args, **kw))
    for done in (1, len(states) // 2, len(states)):
        state = states[done - 1]
        kept = {name: value.copy() for name, value in state.items()}
        batches.clear()
        resumed = ensemble.run(key, 4 / 255, state=state)
        assert len(batches) == len(states) - done
        for name, value in whole.items():
            np.testing.assert_array_equal(resumed[name], value, err_msg=name)
        for name, value in kept.items():
            np.testing.assert_array_equal(state[name], value)  # the state given is not changed
    assert states[0]["broken_images"].shape[0] == int((states[0]["broken_by"] > 0).sum())  # broken rows only
    incomplete = {name: value for name, value in states[-1].items() if name != "broken_images"}
    batches.clear()
    again = ensemble.run(key, 4 / 255, state=incomplete)  # not a whole saved state: the sweep starts afresh
    assert len(batches) == len(states)
    np.testing.assert_array_equal(again["broken_by"], whole["broken_by"])


def test_members_after_everything_is_broken_are_never_run(model, monkeypatch):
    passes = []
    original = evaluate.SplitEvaluator.run
    monkeypatch.setattr(evaluate.SplitEvaluator, "run",
                        lambda self, *args, **kw: passes.append(len(kw["data"]["label"])) or original(self, *args,
                                                                                                       **kw))
    out = sweep(model).run(jax.random.PRNGKey(4), 1.0)  # the whole box: APGD-CE breaks every example
    assert (out["broken_by"] >= 0).all() and out["attempted"][2:].tolist() == [0, 0, 0]
    assert len(passes) == 1  # APGD-CE's pass only: no member runs on an empty set


def test_a_deterministic_member_finds_the_same_on_what_is_left_as_on_the_whole_split(model):
    """FAB-T draws nothing at random, so attacking only APGD-CE's survivors must find what FAB-T alone finds
    there: packing the survivors into other batches changes no example's result."""
    key, epsilon = jax.random.PRNGKey(4), 3 / 255
    both = sweep(model, members=("apgd-ce", "fab-t")).run(key, epsilon)
    apgd_alone = sweep(model, members=("apgd-ce",)).run(key, epsilon)
    fab_alone = sweep(model, members=("fab-t",)).run(key, epsilon)
    assert 0 < both["attempted"][2] < both["attempted"][1]  # FAB-T really ran on a packed remainder
    either = (apgd_alone["broken_by"] >= 0) | (fab_alone["broken_by"] >= 0)
    np.testing.assert_array_equal(both["broken_by"] >= 0, either)
    fab_found = both["broken_by"] == 2
    np.testing.assert_allclose(both["distance"][fab_found], fab_alone["distance"][fab_found], rtol=1e-5, atol=1e-7)


def test_the_clean_mistakes_of_the_source_decide_what_is_attacked(model):
    """A joint (K + 1 logit) decision counts a clean mistake only where a wrong real class wins; "fake"
    winning is not one, so those examples are attacked."""
    readout, data = model
    spec = attacks.EnsembleSpec(num_classes=2, joint=True, **SMALL)
    labels = data["label"] % 2
    clean = np.asarray(readout.apply_fn(readout.params, data["image"]))
    ensemble = EnsembleSweep(spec, readout, {**data, "label": labels}, batch_size=8, mesh=parallel.make_mesh(),
                             source_clean_logits=clean,
                             score_fn=lambda images: np.asarray(readout.apply_fn(readout.params, images)))
    expected = np.asarray(attacks.succeeded(jnp.asarray(clean), labels, num_classes=2, targeted=False, joint=True))
    np.testing.assert_array_equal(ensemble.clean_wrong, expected)
    out = ensemble.run(jax.random.PRNGKey(0), 0.0)  # no budget: only clean mistakes count
    np.testing.assert_array_equal(out["broken_by"] == 0, expected)
    assert not (out["broken_by"] > 0).any()
    assert out["attempted"][1] == len(labels) - expected.sum()


def test_a_transfer_judges_clean_mistakes_by_the_source_and_scores_the_target(model):
    """Attacking one model and scoring another: what counts as broken clean is the attacked (source) model's
    decision, and the logits returned are the scored model's on the source's worst cases."""
    readout, data = model
    source = Readout("rolled", lambda p, x: jnp.roll(readout.apply_fn(p, x), 1, axis=-1), readout.params, 3)
    source_clean = np.asarray(source.apply_fn(source.params, data["image"]))
    target_logits = lambda images: np.asarray(readout.apply_fn(readout.params, images))
    spec = attacks.EnsembleSpec(num_classes=3, **SMALL)
    out = EnsembleSweep(spec, source, data, batch_size=8, mesh=parallel.make_mesh(), source_clean_logits=source_clean,
                        score_fn=target_logits).run(jax.random.PRNGKey(4), 2 / 255)
    source_wrong = np.argmax(source_clean, -1) != data["label"]
    target_wrong = np.argmax(target_logits(data["image"]), -1) != data["label"]
    assert (source_wrong != target_wrong).any()  # the two models disagree on what is a clean mistake
    np.testing.assert_array_equal(out["broken_by"] == 0, source_wrong)
    robust = out["broken_by"] < 0
    np.testing.assert_allclose(out["logits"][robust], target_logits(data["image"][robust]), atol=1e-5)  # untouched
