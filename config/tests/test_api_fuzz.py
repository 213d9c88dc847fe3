"""The OpenAPI fuzzer (issue 9): schemathesis generates requests for every operation of
`/api/schema/`, as an agency member and as a staff user, and no answer may be a 500.

Runs in-process against the WSGI app (the same Django stack), on the test database (PostgreSQL in
CI). Random examples per operation are bounded (FUZZ_EXAMPLES, default 25) so the run stays within minutes.

Every example starts from the fixtures' state: pytest sets function fixtures up once per operation, not
per Hypothesis example, so without `_one_example` an example ran against whatever the earlier ones left
(widget A deleted or its draft rewritten, counters in the cache). A failure that depends on such a
sequence cannot come back when Hypothesis replays the saved example alone on fresh fixtures (the entry
is then dropped from the example database): seen once, never again. Now each example replays alone, and
every DELETE/PATCH/publish example meets widget A as the fixtures made it (not a 404 left by an earlier one).
On failure, Hypothesis prints the falsifying example with `@reproduce_failure` and schemathesis the
failing check with a curl command.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import schemathesis
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.specs.openapi.checks import positive_data_acceptance

from config.wsgi import application

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
# Every other check runs (no 5xx, documented statuses, content types and response schemas, negative
# data rejected...). "Schema-valid data is accepted" cannot hold for an API with business rules: a
# well-formed but unknown license key or agency slug is a 404/400, and the one JSON rule refuses
# integers beyond 64 bits anywhere in a body.
EXCLUDED = [positive_data_acceptance]


def _load_schema(*phases: str) -> schemathesis.BaseSchema:
    """The schema exactly as `/api/schema/` serves it (fetched through the app, no DB needed)."""
    loaded = schemathesis.openapi.from_wsgi("/api/schema/", application)
    # NUL is refused in any text by the one JSON rule (config.api), a rule JSON Schema cannot state;
    # widgets/tests/test_hostile_inputs.py and config/tests/test_json_rule.py cover it.
    loaded.config.generation.update(allow_x00=False)
    if phases:
        loaded.config.phases.update(phases=list(phases))
    return loaded


# Every phase (explicit examples, the coverage phase's boundary and negative cases of every field,
# random fuzzing) for every operation as a member; as staff, every phase for the staff-only license
# operations and fuzzing for the rest (their coverage cases are the member's, and the widget config's
# ~80 fields make that phase the slow part).
schema = _load_schema()
STAFF_ONLY = r"^/api/v1/(licenses|me)"
staff_full = _load_schema().include(path_regex=STAFF_ONLY)
staff_fuzz = _load_schema("examples", "fuzzing").exclude(path_regex=STAFF_ONLY)


@pytest.fixture(autouse=True)
def _no_token_lockout(settings):
    # The auth checks send wrong credentials on purpose; a lockout would turn the rest into 429s.
    settings.AXES_FAILURE_LIMIT = 10**6


@pytest.fixture(autouse=True)
def _keep_the_test_transaction(db):
    # Django's test client does the same: a request must not close the test's transaction.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _real_objects(case, widget, license) -> None:
    """Point path parameters at real objects of agency A, so generated bodies reach the code behind
    the 404 (a random `{public_id}` or `{key}` would only ever test the lookup)."""
    if "public_id" in (case.path_parameters or {}):
        case.path_parameters["public_id"] = widget.public_id
    if "key" in (case.path_parameters or {}):
        case.path_parameters["key"] = license.key


@contextmanager
def _one_example() -> Iterator[None]:
    """One example's requests in a savepoint that is rolled back, with the cache emptied before: the
    next example sees the fixtures' objects and no counters (rate limits, token failures) again."""
    from widgets.chat import chat_cache

    cache.clear()
    chat_cache.clear()
    with transaction.atomic():
        try:
            yield
        finally:
            transaction.set_rollback(True)


def _token(user) -> dict[str, str]:
    return {"Authorization": f"Token {Token.objects.get_or_create(user=user)[0].key}"}


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
def test_no_operation_answers_500_as_member(case, member, widget_a, license_a):
    with _one_example():
        _real_objects(case, widget_a, license_a)
        case.call_and_validate(headers=_token(member), excluded_checks=EXCLUDED)


@staff_full.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
def test_no_operation_answers_500_as_staff(case, staff, widget_a, license_a):
    with _one_example():
        _real_objects(case, widget_a, license_a)
        case.call_and_validate(headers=_token(staff), excluded_checks=EXCLUDED)


@staff_fuzz.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
def test_no_operation_answers_500_as_staff_fuzzing(case, staff, widget_a, license_a):
    with _one_example():
        _real_objects(case, widget_a, license_a)
        case.call_and_validate(headers=_token(staff), excluded_checks=EXCLUDED)
