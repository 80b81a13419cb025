"""Fairness in a vertical run (issue 22): protected attributes are the label party's only,
read beside its rows and never into them; its `done` reply's figures are refused by the
coordinator when malformed, oversized or inconsistent; a schema that puts a protected column
anywhere else is refused with exit 2 naming it."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from typer.testing import CliRunner
from vertical_helpers import deployed_node_config, hello_request

from jointcredit.cli.main import app
from jointcredit.client import vertical_app
from jointcredit.client.vertical_fairness import check_groups, held_out_fairness
from jointcredit.client.vertical_label import LabelSession
from jointcredit.data.errors import DataValidationError
from jointcredit.data.synthetic_vertical import generate, vertical_schema
from jointcredit.data.vertical import load_vertical
from jointcredit.data.vertical_datasets import load_vertical_dataset
from jointcredit.data.vertical_schema import parse_vertical_schema
from jointcredit.federation import protocol
from jointcredit.federation import vertical as v
from jointcredit.federation import vertical_fairness as wire
from jointcredit.federation.protocol import ProtocolError
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.models import fairness as model_fairness
from jointcredit.models.fairness import centralized
from jointcredit.models.vertical.party_bins import party_schema
from jointcredit.server.errors import FederationError
from jointcredit.server.vertical_app import done_figures
from jointcredit.trust.keyset import create_key_set

SCHEMA = """\
label = "defaulted"
positive = 1
id = "customer_id"
[features]
term = "numeric"
amount = "numeric"
sector = "categorical"
[parties.bank]
label = true
features = ["term", "amount"]
protected = ["sex"]
[parties.platform]
features = ["sector"]
"""
SETTINGS = VerticalSettings.model_validate({})


def write(tmp: Path, schema: str = SCHEMA, sex: list[object] | None = None) -> Path:
    (tmp / "bank").mkdir(parents=True)
    (tmp / "platform").mkdir()
    pd.DataFrame(
        {
            "customer_id": ["c01", "c02", "c03", "c04"],
            "term": [12, 24, 36, 60],
            "amount": [1.0, 2.0, 3.0, 4.0],
            "sex": sex or ["female", "male", None, "female"],
            "defaulted": [0, 1, 0, 0],
        }
    ).to_csv(tmp / "bank" / "loans.csv", index=False)
    pd.DataFrame(
        {"customer_id": ["c03", "c01"], "sector": ["retail", "food"], "sex": ["x", "y"]}
    ).to_csv(tmp / "platform" / "users.csv", index=False)
    (tmp / "schema.toml").write_text(schema)
    return tmp


def test_the_label_partys_protected_columns_are_read_beside_its_rows_never_into_them(
    tmp_path: Path,
) -> None:
    data = load_vertical(write(tmp_path))
    bank = data.parties["bank"]
    assert data.schema.protected == ("sex",)
    assert "sex" not in bank.frame.columns  # no feature, bin or message can be made of it
    assert bank.groups is not None and bank.groups["sex"].tolist() == [
        "female", "male", "(missing)", "female",
    ]  # fmt: skip
    platform = data.parties["platform"]
    assert platform.groups is None and "sex" not in platform.frame.columns
    assert "sex" not in party_schema(data.schema, "bank").features
    assert party_schema(data.schema, "bank").protected == ()  # the model's schema: none
    # Written back in the label party's table, and read back the same.
    again = parse_vertical_schema(tomllib.loads(data.schema.to_toml()))
    assert again == data.schema and again.parties["bank"].protected == ("sex",)


def test_the_label_partys_file_must_have_its_protected_columns(tmp_path: Path) -> None:
    root = write(tmp_path)
    frame = pd.read_csv(root / "bank" / "loans.csv").drop(columns="sex")
    frame.to_csv(root / "bank" / "loans.csv", index=False)
    with pytest.raises(DataValidationError, match=r"column\(s\) missing from its file: sex"):
        load_vertical(root)


REFUSED = [
    # a feature party's table
    (
        SCHEMA.replace('features = ["sector"]', 'features = ["sector"]\nprotected = ["sex"]'),
        r"parties\.platform\.protected: 'sex' held by a feature party",
    ),
    # schema-level: whose would it be?
    (
        SCHEMA.replace('id = "customer_id"\n', 'id = "customer_id"\nprotected = ["sex"]\n'),
        r"protected: in a vertical schema the label party's table lists them",
    ),
    # marked in [features], as a horizontal schema may: no party's table holds it
    (
        SCHEMA.replace('protected = ["sex"]\n', "").replace(
            'sector = "categorical"',
            'sector = "categorical"\nsex = { type = "categorical", protected = true }',
        ),
        r"features\.sex\.protected: in a vertical schema the label party's table",
    ),
    # also the label party's feature
    (
        SCHEMA.replace('protected = ["sex"]', 'protected = ["term"]'),
        r"protected attribute 'term' cannot also be a model feature",
    ),
    # also a feature party's feature
    (
        SCHEMA.replace('protected = ["sex"]', 'protected = ["sector"]'),
        r"protected attribute 'sector' cannot also be a model feature",
    ),
    # the label or the id
    (
        SCHEMA.replace('protected = ["sex"]', 'protected = ["customer_id"]'),
        r"protected attribute 'customer_id' cannot be the label, the id",
    ),
    (
        SCHEMA.replace('protected = ["sex"]', 'protected = ["sex", "sex"]'),
        r"protected lists an attribute twice",
    ),
]


@pytest.mark.parametrize(("schema", "message"), REFUSED)
def test_a_protected_column_anywhere_but_the_label_partys_own_is_refused_exit_2(
    tmp_path: Path, schema: str, message: str
) -> None:
    root = write(tmp_path, schema)
    with pytest.raises(DataValidationError, match=message):
        load_vertical(root)
    result = CliRunner().invoke(app, ["data", "check", "--layout", "vertical", str(root)])
    assert result.exit_code == 2
    out = " ".join((result.stdout + result.stderr).split())
    assert re.search(message.replace(r"\ ", " "), out), out


def test_too_many_groups_are_refused_before_any_work(tmp_path: Path) -> None:
    many = [f"g{i}" for i in range(model_fairness.MAX_GROUPS + 1)]
    groups = pd.DataFrame({"sex": many})
    schema = load_vertical(write(tmp_path)).schema
    with pytest.raises(ValueError, match=r"'sex' has 65 groups; at most 64"):
        check_groups(groups, schema, SETTINGS)
    check_groups(groups, schema, SETTINGS.model_copy(update={"fairness": False}))  # not measured


def test_names_the_coordinator_would_refuse_are_refused_before_any_work(tmp_path: Path) -> None:
    """A group name the coordinator cannot print (a tab, a no-break space) or too long would
    end the run at `done`, after the whole training: the bank refuses it first."""
    schema = load_vertical(write(tmp_path)).schema
    for bad in ("female\t", "female\u00a0", "x" * (wire.MAX_NAME + 1)):
        with pytest.raises(ValueError, match="printable characters"):
            check_groups(pd.DataFrame({"sex": ["male", bad]}), schema, SETTINGS)
    check_groups(pd.DataFrame({"sex": ["male", "female"]}), schema, SETTINGS)


def test_group_names_are_printed_as_text_never_as_markup() -> None:
    """Group labels come from data files: `[/]` must not break the report, `[link=...]` must
    not become a terminal hyperlink."""
    from rich.console import Console

    from jointcredit.simulations.report import fairness_table

    rng = np.random.default_rng(2)
    names = np.array(["[/]", "[link=http://evil.example]x"])
    groups = pd.DataFrame({"sex": rng.choice(names, 200)})
    pd_ = rng.uniform(0.01, 0.6, 200)
    y = (rng.random(200) < pd_).astype(int)
    f = centralized(pd_, y, groups, ("sex",), wire.cutoffs(SETTINGS))
    console = Console(record=True, width=200, force_terminal=True)
    console.print(fairness_table(f))
    text = console.export_text()
    assert "[/]" in text and "[link=http://evil.example]x" in text
    assert "\x1b]8;" not in console.export_text(styles=True)  # no OSC-8 hyperlink


def test_the_synthetic_vertical_bank_holds_sex_and_age_band_the_platform_nothing() -> None:
    data = load_vertical_dataset("synthetic-vertical", rows=2_000)
    assert data.schema.protected == ("sex", "age_band")
    assert data.schema.parties["platform"].protected == ()
    bank = data.label_party
    assert bank.groups is not None and len(bank.groups) == len(bank.frame)
    assert set(bank.groups["age_band"]) == {"18-29", "30-49", "50+"}
    assert "sex" not in data.parties["platform"].frame.columns
    # Drawn from their own stream: every other column as before they existed.
    frames = generate(500, seed=3)
    assert list(frames["platform"].columns) == [
        "phone",
        *vertical_schema().parties["platform"].features,
    ]
    # The known disparity: the youngest band defaults more (through the features only).
    y = bank.frame["defaulted"].to_numpy()
    young = (bank.groups["age_band"] == "18-29").to_numpy()
    old = (bank.groups["age_band"] == "50+").to_numpy()
    assert y[young].mean() > y[old].mean() + 0.05


def test_sba_vertical_has_no_protected_attribute() -> None:
    data = load_vertical_dataset("sba-vertical")
    assert data.schema.protected == () and data.label_party.groups is None


# -- the figures, and the coordinator's checks of them


def figures() -> model_fairness.Fairness:
    rng = np.random.default_rng(5)
    n = 400
    groups = pd.DataFrame(
        {"sex": rng.choice(["female", "male"], n), "band": rng.choice(["a", "b", "c"], n)}
    )
    pd_ = rng.uniform(0.01, 0.6, n)
    y = (rng.random(n) < pd_).astype(int)
    return centralized(pd_, y, groups, ("sex", "band"), wire.cutoffs(SETTINGS))


def test_held_out_fairness_is_models_fairness_on_the_held_out_rows() -> None:
    rng = np.random.default_rng(1)
    groups = pd.DataFrame({"sex": rng.choice(["f", "m"], 50)})
    rows = np.array([4, 9, 2, 30, 31, 7])
    pd_, y = rng.uniform(0, 0.5, 6), np.array([0, 1, 0, 0, 1, 0])
    schema = parse_vertical_schema(tomllib.loads(SCHEMA))
    got = held_out_fairness(groups, rows, pd_, y, schema, SETTINGS)
    held = groups.iloc[rows].reset_index(drop=True)
    assert got == centralized(pd_, y, held, ("sex",), wire.cutoffs(SETTINGS))
    off = SETTINGS.model_copy(update={"fairness": False})
    assert held_out_fairness(groups, rows, pd_, y, schema, off) is None


def test_the_codec_round_trips_and_its_caps_are_the_measurements() -> None:
    f = figures()
    assert wire.decode(wire.encode(f), SETTINGS) == f
    assert wire.MAX_GROUPS == model_fairness.MAX_GROUPS


def _edited(change: object) -> str:
    raw = json.loads(wire.encode(figures()))
    change(raw)  # type: ignore[operator]
    return json.dumps(raw)


def _many_groups(raw: dict) -> None:  # type: ignore[type-arg]
    one = raw["groups"]["sex"]["female"]
    names = [f"g{i}" for i in range(wire.MAX_GROUPS + 1)]
    raw["groups"]["sex"] = {g: one for g in names}
    raw["adverse_impact_ratio"]["sex"] = dict.fromkeys(names, 1.0)
    raw["auc_by_group"]["sex"] = dict.fromkeys(names, 0.5)
    raw["calibration_by_group"]["sex"] = dict.fromkeys(names)


def _negative_tp(raw: dict) -> None:  # type: ignore[type-arg]
    male = raw["groups"]["sex"]["male"]
    male.update(tp=-1, fp=male["fp"] + 1)  # the sums kept, one count negative


def _infinite_calibration(raw: dict) -> None:  # type: ignore[type-arg]
    band = raw["calibration_by_group"]["sex"]["male"]["bands"][0]
    band["predicted_default_rate"] = float("inf")  # metrics.json would say Infinity


def _escape_group(raw: dict) -> None:  # type: ignore[type-arg]
    raw["groups"]["sex"]["\x1b[2J"] = raw["groups"]["sex"]["male"]  # a terminal escape


HOSTILE = [
    (12, "not a JSON text"),
    ("x" * (wire.MAX_BYTES + 1), "more than"),
    ("{not json", "fairness: <top>"),
    (_edited(lambda r: r.update(extra=1)), "extra: Extra inputs"),
    (_edited(lambda r: r["groups"]["sex"]["male"].update(applicants="many")), "applicants"),
    (_edited(_many_groups), "1 to 64 groups"),
    (_edited(lambda r: r.update(attributes=[f"a{i}" for i in range(9)])), "1 to 8 distinct"),
    (_edited(lambda r: r["auc_by_group"].pop("band")), "auc_by_group is not keyed"),
    (_edited(lambda r: r["auc_by_group"]["band"].pop("a")), r"auc_by_group\['band'\]"),
    (_edited(lambda r: r["groups"]["sex"]["male"].update(approved=10**6)), "do not add up"),
    (_edited(_negative_tp), "do not add up"),
    (_edited(lambda r: r["adverse_impact_ratio"]["sex"].update(male=7.5)), "not in"),
    (_edited(lambda r: r["demographic_parity_difference"].update(sex=float("nan"))), "not in"),
    (_edited(lambda r: r["cutoffs"].update(approve=900)), "other cut-offs"),
    (_edited(lambda r: r.update(secure_sum=True)), "no secure sum"),
    (_edited(_escape_group), "printable"),
    (_edited(_infinite_calibration), "calibration"),
    (_edited(lambda r: r["cutoffs"].update(source="x")), "cut-offs"),
]


@pytest.mark.parametrize(("value", "message"), HOSTILE)
def test_the_coordinator_refuses_malformed_or_oversized_figures(
    value: object, message: str
) -> None:
    with pytest.raises(ProtocolError, match=message):
        wire.decode(value, SETTINGS)


def _done(**values: object) -> Message:
    content = RecordDict({v.REQUEST: ConfigRecord({v.ACTION: v.DONE, **values})})  # type: ignore[dict-item]
    return Message(content, dst_node_id=1, message_type=v.STEP)


@pytest.mark.usefixtures("task_identity")
def test_the_done_reply_is_read_as_a_hostile_message() -> None:
    f = figures()
    metrics, got = done_figures(_done(**{"metric/auc": 0.8, v.FAIRNESS: wire.encode(f)}), SETTINGS)
    assert metrics == {"auc": 0.8} and got == f
    assert done_figures(_done(**{"metric/auc": 0.8}), SETTINGS) == ({"auc": 0.8}, None)
    with pytest.raises(FederationError, match="'metric/auc' is not a number"):
        done_figures(_done(**{"metric/auc": "0.8"}), SETTINGS)
    with pytest.raises(FederationError, match="not finite, or too many"):
        done_figures(_done(**{"metric/auc": float("inf")}), SETTINGS)
    with pytest.raises(FederationError, match="not finite, or too many"):
        done_figures(_done(**{f"metric/m{i}": 0.5 for i in range(65)}), SETTINGS)
    with pytest.raises(FederationError, match="fairness figures refused: fairness: <top>"):
        done_figures(_done(**{v.FAIRNESS: "[]"}), SETTINGS)
    off = SETTINGS.model_copy(update={"fairness": False})
    with pytest.raises(FederationError, match="the run turned off"):
        done_figures(_done(**{v.FAIRNESS: wire.encode(f)}), off)


def test_the_cutoffs_are_the_horizontal_runs_settings() -> None:
    s = VerticalSettings.model_validate({"fairness-approve": 700, "fairness-decline": 620})
    assert (wire.cutoffs(s).approve, wire.cutoffs(s).decline) == (700, 620)
    with pytest.raises(ValueError, match="fairness-decline must not be above"):
        VerticalSettings.model_validate({"fairness-approve": 600, "fairness-decline": 620})
    assert (SETTINGS.fairness_approve, SETTINGS.fairness_decline) == (680, 600)


def test_simulate_refuses_an_attribute_with_too_many_groups_exit_2(tmp_path: Path) -> None:
    root = write(tmp_path / "d", sex=[f"g{i}" for i in range(4)])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model_fairness, "MAX_GROUPS", 3)
        out = tmp_path / "out"
        result = CliRunner().invoke(
            app, ["simulate", "--layout", "vertical", "--dataset", str(root), "--out", str(out)]
        )
    assert result.exit_code == 2, result.output
    assert "'sex' has 4 groups; at most 3" in " ".join(result.output.split())
    assert not out.exists()


def test_a_deployed_bank_sends_figures_only_when_its_node_config_says_so(tmp_path: Path) -> None:
    """The coordinator's run config asks for fairness; a deployed bank keeps its groups (and
    so sends figures) only with `share-fairness = true` in its own node config."""
    root = write(tmp_path / "data")
    kit = tmp_path / "kit"
    create_key_set(kit, ["bank", "platform"], federation="share-fairness")
    node = deployed_node_config(kit, "bank", root / "bank" / "loans.csv", root / "schema.toml")
    run = {"layout": "vertical", "parties": 2, "model": "scorecard"}
    for own, kept in ((None, False), (False, False), (True, True)):
        config = node if own is None else {**node, protocol.SHARE_FAIRNESS: own}
        vertical_app.handle(hello_request(8, 9, run, config))
        try:
            (key,) = vertical_app.sessions()
            session = vertical_app._SESSIONS[key]
            assert isinstance(session, LabelSession)
            assert (session.groups is not None) == kept, own
        finally:
            vertical_app.drop((8, 9))


def test_node_start_takes_the_institutions_own_settings_only() -> None:
    from jointcredit.deploy.processes import node_options

    assert node_options(["share-fairness=true", "pair-min-rows=7", "allow-time-split=false"]) == {
        "share-fairness": True, "pair-min-rows": 7, "allow-time-split": False,
    }  # fmt: skip
    for bad, message in (
        (["keys-dir=/tmp/evil"], "KEY one of"),  # the coordinator's, or nobody's
        (["share-fairness"], "KEY one of"),
        (["pair-min-rows=many"], "pair-min-rows"),
        (["pair-min-rows=0"], "pair-min-rows"),
        (["share-fairness=perhaps"], "share-fairness"),
    ):
        with pytest.raises(ValueError, match=message):
            node_options(bad)
