"""The AutoAttack-style ensemble over a whole split, as the reference runs it: each member attacks only the
examples every earlier member (and the clean image) left unbroken, packed into full batches.

Square's 5000 queries cost most of an ensemble, and after APGD-CE often only a fraction of the split is left
to attack, so this does less work than running every member on every batch (`attacks.autoattack`, which can
only skip a batch once all of it is broken); the last batch of what is left is padded to the compiled size.
Each member is its own jitted program over the split, one trace shared by every budget (epsilon is traced).
A member's randomness is `attacks.member_key` of the sweep's key, as inside `autoattack`; random draws
follow an example's place in its batch, so which examples are left changes them, as in the reference,
where each attack runs on the remaining points only. The batches run one call at a time, and after each one
the sweep's whole state can be saved (`save`): a rerun resumes from it (`state`) and finds exactly what an
uninterrupted run finds, losing at most the batch in flight (one Square batch can take many minutes on a CPU).
"""

import functools
from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh

from cfjax import attacks, evaluate
from cfjax.kinds import Readout

# A saved state (`EnsembleSweep.run`'s `save`): the member running and how far through what it attacks
# (`left`, `next`) and every example's outcome so far, saved as they are, and the worst cases found by
# members, saved as the broken rows' images only.
_AS_THEY_ARE = frozenset({"member", "next", "left", "success", "broken_by", "attempted"})
SAVED_FIELDS = _AS_THEY_ARE | {"broken_rows", "broken_images"}


def _member_batch(params, batch, *, source_apply, spec, name):
    success, adversarial = attacks.run_member(
        name, lambda x: source_apply(params["source"], x), batch["image"], batch["label"],
        attacks.member_key(params["key"], name), params["epsilon"], spec=spec)
    return {"success": success, "adversarial": adversarial}


class EnsembleSweep:
    """Runs one `EnsembleSpec` against `source` over `data` at any budget; `score_fn(images)` gives the scored
    (target) model's logits on a whole split of images."""

    def __init__(self, spec: attacks.EnsembleSpec, source: Readout, data: dict, *, batch_size: int, mesh: Mesh,
                 source_clean_logits: np.ndarray, score_fn: Callable[[np.ndarray], np.ndarray]):
        self.spec, self.data, self.score_fn, self.batch_size = spec, data, score_fn, batch_size
        self.source_params = source.params
        self.clean_wrong = np.asarray(attacks.succeeded(
            source_clean_logits, data["label"], num_classes=spec.num_classes, targeted=False, joint=spec.joint))
        self.members = {name: evaluate.SplitEvaluator(
            data, functools.partial(_member_batch, source_apply=source.apply_fn, spec=spec, name=name),
            batch_size=batch_size, mesh=mesh, fields=("image", "label")) for name in spec.valid_members()}

    def run(self, key: jax.Array, epsilon: float, *, state: dict | None = None,
            save: Callable[[dict], None] | None = None) -> dict:
        """Per example: the target's logits on the worst case found, its L-inf distance, `broken_by` (an index
        into `attacks.member_names`, -1 if robust), and `attempted`: how many examples each name ran on.
        `save(state)` is called after every batch with a new dict of arrays; `state`, one of those, resumes the
        sweep where it was (one without every field of `SAVED_FIELDS`, e.g. from a damaged file: from the start)."""
        images, labels = self.data["image"], self.data["label"]
        progress = self._unpacked(state) if self.resume_point(state) is not None else self._fresh()
        params = {"source": self.source_params, "key": key, "epsilon": np.float32(epsilon)}
        members = list(self.members.values())
        while progress["member"] <= len(members):
            left, start = progress["left"], int(progress["next"])
            if start < len(left):  # the next batch of what this member attacks
                chunk = left[start:start + self.batch_size]
                out = members[progress["member"] - 1].run(params, data={"image": images[chunk],
                                                                        "label": labels[chunk]})
                broke = chunk[out["success"]]
                progress["adversarial"][broke] = out["adversarial"][out["success"]]
                progress["broken_by"][broke] = progress["member"]
                progress["success"][broke] = True
                progress["next"] = start + len(chunk)
            else:  # this member is done: the next one attacks what is left now
                progress["member"] += 1
                progress["left"], progress["next"] = np.flatnonzero(~progress["success"]), 0
                if progress["member"] <= len(members):
                    progress["attempted"] = np.append(progress["attempted"], len(progress["left"]))
                continue
            if save is not None:
                save(self._packed(progress))
        distance = np.asarray(attacks.distance(images, progress["adversarial"], "linf"))
        return {"logits": self.score_fn(progress["adversarial"]), "distance": distance,
                "broken_by": progress["broken_by"], "attempted": progress["attempted"]}

    def resume_point(self, state: dict | None) -> str | None:
        """Where `run(state=state)` goes on, e.g. "square: 64 of the 87 examples it attacks done"; None when it
        starts from the beginning (no state, or one without every field of `SAVED_FIELDS`)."""
        if state is None or not SAVED_FIELDS <= set(state):
            return None
        member = attacks.member_names(self.spec)[min(int(state["member"]), len(self.members))]
        return f"{member}: {int(state['next'])} of the {len(state['left'])} examples it attacks done"

    def _fresh(self) -> dict:
        """The state before the first member: the clean image is the worst case, its mistakes already broken."""
        success = self.clean_wrong.copy()
        return {"member": 1, "next": 0, "left": np.flatnonzero(~success), "success": success,
                "adversarial": np.array(self.data["image"], copy=True), "broken_by": np.where(success, 0, -1),
                "attempted": np.asarray([len(success), int((~success).sum())])}  # the clean image: every example

    @staticmethod
    def _packed(progress: dict) -> dict:
        """What is saved: the images of the examples a member broke only (the others are the clean images), so
        a save after each batch stays small beside the split."""
        rows = np.flatnonzero(progress["broken_by"] > 0)
        saved = {name: np.array(progress[name], copy=True) for name in _AS_THEY_ARE}
        return {**saved, "broken_rows": rows, "broken_images": progress["adversarial"][rows]}

    def _unpacked(self, state: dict) -> dict:
        progress = {name: np.array(state[name], copy=True) for name in _AS_THEY_ARE}
        progress["member"], progress["next"] = int(progress["member"]), int(progress["next"])
        progress["adversarial"] = np.array(self.data["image"], copy=True)
        progress["adversarial"][state["broken_rows"]] = state["broken_images"]
        return progress
