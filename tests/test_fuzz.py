"""Schemathesis against the live service's OpenAPI schema: no 5xx, and every answer matches the schema."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("server")]
EXAMPLES = 30  # per operation; bounded for CI


def test_no_server_error_and_answers_match_the_schema(url) -> None:
    # schemathesis' pytest plugin does not run under pytest 9, so each operation is driven with hypothesis here
    schema = schemathesis.openapi.from_url(f"{url}/docs.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 5, [op.label for op in operations]
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case) -> None:
            case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])

        fuzz()
    print(f"{len(operations)} operations × up to {EXAMPLES} examples: {[op.label for op in operations]}")
