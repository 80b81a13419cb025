"""The OpenAPI page's request example for any model and policy (service/examples.py): the SBA
loan for a model of the SBA features, the average applicant for others; the context signals a
policy declares, at values its fields accept."""

from __future__ import annotations

from jointcredit.data.catalog import DataConfig, load_federation
from jointcredit.data.schema import FeatureSpec
from jointcredit.models.preprocessing import PreprocessingSpec, agree, summarize
from jointcredit.service.applicants import typical
from jointcredit.service.examples import CONTEXT, SBA_APPLICANT, example_request
from jointcredit.service.policy import ContextField, load_policy


def _spec(dataset: str) -> tuple[PreprocessingSpec, dict[str, FeatureSpec]]:
    fed = load_federation(DataConfig(dataset=dataset, institutions=2, synthetic_rows=300))
    summaries = [
        summarize(d.train.x, d.train.y, fed.schema, max_categories=64, min_count=5)
        for d in fed.institutions.values()
    ]
    spec = agree(summaries, fed.schema, max_categories=64, min_count=5)
    return spec, dict(fed.schema.features)


def test_a_model_of_the_sba_loans_gets_the_real_loan_and_every_signal() -> None:
    spec, features = _spec("sba")
    example = example_request(spec, features, load_policy().context)
    assert example["applicant"] == SBA_APPLICANT
    assert example["context"] == CONTEXT  # every signal the default policy's rules use
    assert set(example["context"]) == set(load_policy().context)


def test_another_model_gets_the_average_applicant() -> None:
    spec, features = _spec("synthetic")
    example = example_request(spec, features, load_policy().context)
    assert example["applicant"] == typical(spec, features)
    assert example["context"] == CONTEXT


def test_signals_a_policy_bounds_otherwise_are_left_out() -> None:
    spec, features = _spec("synthetic")
    context = {
        "recent_lenders_90d": ContextField(type="integer", description="d", max=0),
        "transactions_30d": ContextField(type="string", description="d"),
        "online_activity_share": ContextField(type="number", description="d", min=0, max=1),
    }
    example = example_request(spec, features, context)
    assert example["context"] == {"online_activity_share": 0.6}
