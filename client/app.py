"""The institution's ClientApp: its rows stay here, only aggregates and model updates leave.

Three message handlers:
- `query`: summarise own training rows for federated preprocessing (counts, sums, bounded
  category counts; see `jointcredit.models.preprocessing`).
- `train`: train the global model on own rows for a few local epochs (FedProx term when the
  server sends `proximal-mu`, SCAFFOLD drift correction when it sends a control variate) and
  return the updated weights - with DP-SGD and an enforced budget under record-level DP
  (`jointcredit.client.record_dp`); in a simulated attack, the attacking institutions poison
  theirs (`jointcredit.privacy.robust`).
- `query.prior`: how far this institution's own fit strays from the final global model, per
  coefficient (squared), for the hierarchical personalisation prior.
- `evaluate`: score own test rows; optionally also personalise a copy first.
Every reply carries an `identity` ConfigRecord with the institution id, so the server can order
replies deterministically and report per institution, and is signed on the way out by the
outermost mod (`jointcredit.client.signing`).
"""

from __future__ import annotations

import hashlib
import math
import zlib

import numpy as np
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    MetricRecordValues,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from jointcredit.client.adversary import adversary_mod
from jointcredit.client.data import NodeData, node_data, simulated_institutions
from jointcredit.client.signing import signing_mod
from jointcredit.client.update import LocalUpdate
from jointcredit.models import control
from jointcredit.models.metrics import risk_metrics
from jointcredit.models.nets import architecture, build_model
from jointcredit.models.personalize import (
    PRIOR,
    PRIOR_ACTION,
    PRIOR_COUNT,
    Personalized,
    personalize,
    personalize_hierarchical,
    prior_deviation,
)
from jointcredit.models.preprocessing import PreprocessingSpec, summarize
from jointcredit.models.settings import UNIT_WEIGHT, Attack, RunSettings
from jointcredit.models.training import DriftControl, predict_pd, train
from jointcredit.privacy.robust import attacker_ids, poison_update
from jointcredit.trust.updates import IDENTITY_RECORD as IDENTITY

# Small models on 2 cores: one intra-op thread per client avoids oversubscription. In
# deployment every message starts a fresh ClientApp process, so optional stacks (Opacus,
# Flower's legacy SecAgg+ client) are imported only by the runs that use them.
torch.set_num_threads(1)

# Mods run outermost first: signing wraps the handlers (and any handler-specific mods), so it
# signs exactly what leaves; the simulation-only adversary sits outside it, as a network
# attacker or a dishonest node's own code would.
app = ClientApp(mods=[adversary_mod, signing_mod])


def _setup(context: Context) -> tuple[RunSettings, NodeData]:
    settings = RunSettings.from_run_config(context.run_config)
    return settings, node_data(dict(context.node_config), settings)


def _seed(settings: RunSettings, institution: str, server_round: int, salt: int = 0) -> int:
    return (
        settings.seed * 1_000_003 + server_round * 7919 + salt + zlib.crc32(institution.encode())
    ) % (2**31)


def _identity(node: NodeData) -> ConfigRecord:
    return ConfigRecord({"institution": node.institution})


def _model_from(
    msg: Message, settings: RunSettings
) -> tuple[torch.nn.Module, PreprocessingSpec, ArrayRecord]:
    """The global model, its preprocessing, and the federation's SCAFFOLD control variate
    (empty unless the strategy is `scaffold`)."""
    config = msg.content["config"]
    spec = PreprocessingSpec.model_validate_json(str(config["preprocessing"]))
    model = build_model(architecture(settings.model, spec.n_outputs))
    weights, federation_control = control.split(msg.content.array_records["arrays"])
    model.load_state_dict(weights.to_torch_state_dict(), strict=True)
    return model, spec, federation_control


def _drift_control(
    model: torch.nn.Module, federation_control: ArrayRecord, context: Context
) -> tuple[DriftControl, bool]:
    """SCAFFOLD's correction c - c_i, and whether c_i was this institution's own: its mean
    gradient of the last round it trained in, kept in its Flower state (zero before its first
    round, or when the node lost its state)."""
    names = [name for name, _ in model.named_parameters()]
    c = control.tensors(federation_control, names)
    own = context.state.get(control.STATE_KEY)
    if isinstance(own, ArrayRecord) and set(own.keys()) == set(names):
        c_i, kept = control.tensors(own, names), True
    else:
        c_i, kept = [torch.zeros_like(t) for t in c], False
    return DriftControl([a - b for a, b in zip(c, c_i, strict=True)]), kept


def _nan(v: float | None) -> float:
    return math.nan if v is None else v


@app.query()
def query(msg: Message, context: Context) -> Message:
    _, node = _setup(context)
    config = msg.content["config"]
    summary = summarize(
        node.data.train.x,
        node.data.train.y,
        node.schema,
        max_categories=int(config["max-categories"]),  # type: ignore[arg-type]
        min_count=int(config["min-category-count"]),  # type: ignore[arg-type]
    )
    content = RecordDict(
        {
            "summary": ConfigRecord(
                {"json": summary.model_dump_json(), "schema": node.schema.model_dump_json()}
            ),
            IDENTITY: _identity(node),
        }
    )
    return Message(content, reply_to=msg)


OWN_PRIOR_MODEL = "prior-own-model"  # node state: which global model the kept deviation is of


@app.query(PRIOR_ACTION)
def prior_query(msg: Message, context: Context) -> Message:
    settings, node = _setup(context)
    model, spec, _ = _model_from(msg, settings)
    deviation = prior_deviation(model, node.matrix(spec, "train"), node.data.train.y)
    names = [name for name, _ in model.named_parameters()]
    record = ArrayRecord({n: Array(d) for n, d in zip(names, deviation, strict=True)})
    # Kept for the final evaluate message, which subtracts it from the federation's sum.
    context.state[PRIOR] = record
    context.state[OWN_PRIOR_MODEL] = ConfigRecord({"sha256": _digest(model)})
    return Message(RecordDict({PRIOR: record, IDENTITY: _identity(node)}), reply_to=msg)


def _digest(model: torch.nn.Module) -> str:
    return hashlib.sha256(
        b"".join(p.detach().numpy().tobytes() for p in model.parameters())
    ).hexdigest()


def _own_deviation(
    context: Context, model: torch.nn.Module, x: np.ndarray, y: np.ndarray
) -> list[np.ndarray]:
    """What `prior_query` sent for this model, from the node's state; recomputed (the fit is
    deterministic) when the state was lost."""
    names = [name for name, _ in model.named_parameters()]
    kept, about = context.state.get(PRIOR), context.state.get(OWN_PRIOR_MODEL)
    if (
        isinstance(kept, ArrayRecord)
        and isinstance(about, ConfigRecord)
        and about.get("sha256") == _digest(model)
        and set(kept.keys()) == set(names)
    ):
        return [kept[n].numpy() for n in names]
    return prior_deviation(model, x, y)


def _personalize(
    msg: Message,
    context: Context,
    settings: RunSettings,
    node: NodeData,
    model: torch.nn.Module,
    spec: PreprocessingSpec,
    finetune: int,
) -> Personalized:
    """On own training rows only: under the federation's hierarchical prior when the
    coordinator sent its deviation totals, otherwise Ditto with its strength chosen on own
    validation rows."""
    x_train, y_train = node.matrix(spec, "train"), node.data.train.y
    if PRIOR in msg.content.array_records:
        names = [name for name, _ in model.named_parameters()]
        totals = msg.content.array_records[PRIOR]
        count = int(msg.content["config"][PRIOR_COUNT])  # type: ignore[arg-type]
        if set(totals.keys()) != set(names):
            raise ValueError(f"prior totals name {sorted(totals.keys())}, the model {names}")
        own = _own_deviation(context, model, x_train, y_train)
        others = [totals[n].numpy() - d for n, d in zip(names, own, strict=True)]
        return personalize_hierarchical(model, x_train, y_train, others, count - 1)
    seed = _seed(settings, node.institution, int(msg.content["config"]["server-round"]), salt=1)  # type: ignore[arg-type]
    fit, val = node.validation_split(seed)
    return personalize(
        model,
        (x_train[fit], y_train[fit]),
        (x_train[val], y_train[val]),
        settings.train_config(seed=seed, epochs=finetune),
    )


def institution_clipping_mod(
    msg: Message, context: Context, call_next: ClientAppCallable
) -> Message:
    """Flower's `fixedclipping_mod` when the coordinator asks for client-side clipping
    (institution-level DP sends the clipping norm in the train config); otherwise nothing.
    On the training handler only (app-wide it breaks evaluate: see Flower's notes), and
    inside the signing mod, so the signature covers the clipped update."""
    config = msg.content.config_records.get("config")
    if config is not None and KEY_CLIPPING_NORM in config:
        return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)


@app.train(mods=[institution_clipping_mod])
def train_handler(msg: Message, context: Context) -> Message:
    settings, node = _setup(context)
    if settings.privacy == "secagg":
        # Every SecAgg+ stage arrives as a train message; Flower's secaggplus_mod runs the
        # protocol and calls `local_update` (through a NumPyClient) at the masking stage.
        from jointcredit.client.secagg import secagg_train  # Flower's legacy stack: only here

        return secagg_train(msg, context, settings, node, local_update)
    model, spec, federation_control = _model_from(msg, settings)
    config = msg.content["config"]
    drift, extra = None, {}
    if federation_control:
        drift, kept = _drift_control(model, federation_control, context)
        # Reported so the coordinator can tell a node that lost its state (restarted, moved)
        # from one that corrects with its own c_i.
        extra["scaffold-own-control"] = float(kept)
    update = local_update(
        model,
        spec,
        settings,
        node,
        context,
        server_round=int(config["server-round"]),  # type: ignore[arg-type]
        mu=float(config.get("proximal-mu", 0.0)),  # type: ignore[arg-type]
        drift=drift,
    )
    metrics = MetricRecord({**update.metrics, **extra})
    content = RecordDict({"metrics": metrics, IDENTITY: _identity(node)})
    if not update.withheld:
        arrays = ArrayRecord(model.state_dict())
        if drift is not None:
            assert drift.mean_gradient is not None
            own = control.record([n for n, _ in model.named_parameters()], drift.mean_gradient)
            context.state[control.STATE_KEY] = own
            arrays = control.join(arrays, own)
        content["arrays"] = arrays
    return Message(content, reply_to=msg)


def local_update(
    model: torch.nn.Module,
    spec: PreprocessingSpec,
    settings: RunSettings,
    node: NodeData,
    context: Context,
    *,
    server_round: int,
    mu: float,
    drift: DriftControl | None = None,
) -> LocalUpdate:
    """One round of local training of `model` (in place) on this institution's rows: plain,
    or DP-SGD under record-level DP; in a simulated attack, poisoned."""
    global_params = [p.detach().clone() for p in model.parameters()] if mu > 0 else None
    attack = simulated_attack(settings, node, dict(context.node_config))
    poisons_update = attack in ("sign-flip", "scale")
    global_state = (
        {k: v.detach().clone().numpy() for k, v in model.state_dict().items()}
        if poisons_update
        else {}
    )
    y = node.data.train.y
    x = node.matrix(spec, "train")
    labels = 1 - y if attack == "label-flip" else y
    cfg = settings.train_config(
        seed=_seed(settings, node.institution, server_round), server_round=server_round, mu=mu
    )
    values: dict[str, MetricRecordValues] = {"num-examples": len(y)}
    if settings.privacy == "dp-institution":
        values[UNIT_WEIGHT] = 1.0  # Flower's accounted DP averages institutions equally
    if settings.privacy == "dp-record":
        from jointcredit.client.record_dp import record_dp_round  # Opacus: only when used

        dp = record_dp_round(
            model, x, labels, cfg, settings, context.state, global_params=global_params
        )
        values.update(dp.metrics())
        if dp.steps == 0:
            # Budget spent: the institution stops contributing. Its signed reply carries no
            # update, only its accounting, so the coordinator can say who stopped and when.
            return LocalUpdate({**values, "num-examples": 0}, withheld=True)
        loss = dp.loss
    else:
        loss = train(model, x, labels, cfg, global_params=global_params, control=drift)
    if poisons_update:
        trained = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        poisoned = poison_update(global_state, trained, attack, settings.attack_scale)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in poisoned.items()})
    values["train-loss"] = loss
    return LocalUpdate(values, withheld=False)


def simulated_attack(
    settings: RunSettings, node: NodeData, node_config: dict[str, object]
) -> Attack:
    """The poisoning this node plays in a simulated attack (`none` for honest nodes). It signs
    its poisoned update with its own valid key: only the aggregation rule can stop it."""
    if settings.attack == "none" or settings.attackers == 0:
        return "none"
    everyone = simulated_institutions(settings, node_config)
    attackers = attacker_ids(everyone, settings.attackers, settings.seed)
    return settings.attack if node.institution in attackers else "none"


@app.evaluate()
def evaluate_handler(msg: Message, context: Context) -> Message:
    settings, node = _setup(context)
    model, spec, _ = _model_from(msg, settings)
    x_test, y_test = node.matrix(spec, "test"), node.data.test.y
    m = risk_metrics(y_test, predict_pd(model, x_test))
    values: dict[str, MetricRecordValues] = {
        "auc": _nan(m["auc"]),
        "ks": _nan(m["ks"]),
        "brier": _nan(m["brier"]),
        "num-examples": len(y_test),
    }
    if settings.privacy == "dp-institution":
        values[UNIT_WEIGHT] = 1.0  # the strategy validates its weight key on every reply
    config = msg.content["config"]
    finetune = int(config.get("finetune-epochs", 0))  # type: ignore[arg-type]
    if finetune > 0:
        chosen = _personalize(msg, context, settings, node, model, spec, finetune)
        p = risk_metrics(y_test, predict_pd(chosen.model, x_test))
        values.update(
            {
                "auc-personalized": _nan(p["auc"]),
                "ks-personalized": _nan(p["ks"]),
                "brier-personalized": _nan(p["brier"]),
            }
        )
        if chosen.method != "hierarchical":  # Ditto's chosen strength, -1: the global model
            values["personalized-mu"] = -1.0 if chosen.mu is None else chosen.mu
    content = RecordDict({"metrics": MetricRecord(values), IDENTITY: _identity(node)})
    return Message(content, reply_to=msg)
