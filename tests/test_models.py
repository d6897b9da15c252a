"""actors/models/: the council specs, the PUT body and the default councils; a request's metadata must be storable
and scoring weights finite. No Ray, no Valkey."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from actors.models.councils import CouncilSpec, CouncilUpsert, ScoringSpec, default_council
from actors.models.requests import Constraints

pytestmark = pytest.mark.unit


def test_put_accepts_what_get_returns():
    stored = default_council("DEV", "smollm2").model_copy(update={"version": 7, "created_at": 1.0, "updated_at": 2.0})
    got = stored.model_dump(mode="json")  # the body of GET /v1/councils/DEV
    got["rounds"] = 2  # the user's edit

    spec = CouncilUpsert.model_validate(got).spec_for("DEV")

    assert isinstance(spec, CouncilSpec) and spec.role == "DEV"
    assert spec.agents == stored.agents and spec.scoring == stored.scoring and spec.rounds == 2
    # Read-only fields are ignored: the store sets them (version + 1, created_at kept).
    assert spec.version == 1 and spec.created_at != 1.0


def test_put_body_role_must_match_the_path_and_may_be_left_out():
    body = default_council("DEV", "smollm2").model_dump(mode="json")
    with pytest.raises(ValueError, match=r"body\.role: 'DEV' does not match the role in the path \('QA'\)"):
        CouncilUpsert.model_validate(body).spec_for("QA")
    del body["role"], body["version"], body["created_at"], body["updated_at"]
    assert CouncilUpsert.model_validate(body).spec_for("QA").role == "QA"


def test_put_still_rejects_unknown_fields():
    body = default_council("DEV", "smollm2").model_dump(mode="json")
    body["agentz"] = body.pop("agents")
    with pytest.raises(ValidationError, match="agentz"):
        CouncilUpsert.model_validate(body)


@pytest.mark.parametrize("metadata,needle", [
    ({"x": math.nan}, "plain JSON"),
    ({"x": "\udfff"}, "plain JSON"),
    ({"x": "y" * 20_000}, "over"),
    (json.loads("[" * 9 + "1" + "]" * 9) and {"deep": json.loads("[" * 9 + "1" + "]" * 9)}, "deeper"),
])
def test_metadata_must_be_storable(metadata, needle):
    with pytest.raises(ValidationError, match=needle):
        Constraints(metadata=metadata)
    Constraints(metadata={"task_id": "T-1", "nested": {"a": [1, 2, {"b": None}]}})


def test_scoring_weights_are_finite():
    for bad in (math.inf, -math.inf, math.nan, 1e7):
        with pytest.raises(ValidationError, match="finite"):
            ScoringSpec(weights={"syntax": bad})
    assert ScoringSpec(weights={"syntax": 2.0, "length": -1}).weights["syntax"] == 2.0
