"""Schemathesis against /api/openapi.json, in-process: no 500s, and every response as documented.

Each operation gets a bounded number of generated requests, valid and invalid (about a
minute in all on two busy cores). Auth is on, so the `ignored_auth` check also proves that
every operation refuses a request without the token. Schemathesis's own pytest plugin is
not used: its fixture loader does not run under pytest 9, and driving Hypothesis directly
is just as short.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from .conftest import TOKEN

EXAMPLES = 40


@pytest.fixture
def api_schema(make_app):
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", make_app(auth={"token": TOKEN}))

    @schema.auth()
    class Bearer:
        """The token, given the way schemathesis knows about, so negative cases never count its absence."""

        def get(self, case, context):  # type: ignore[no-untyped-def]
            return TOKEN

        def set(self, case, data, context):  # type: ignore[no-untyped-def]
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    return schema


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_openapi_document(api_schema, mode):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 14, "every operation is in the document"
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):  # type: ignore[no-untyped-def]
            # A schema-valid launch of a branch the repository lacks is rightly a 422, so "valid
            # data is accepted" does not hold here; every other check does.
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        check()
