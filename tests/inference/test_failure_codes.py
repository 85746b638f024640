from __future__ import annotations

from inference.models import FailureCode, Generation
from inference.services import FAILURE_MESSAGES
from inference.services.failures import failure_message
from inference.views import FAILURE_HINTS


def test_every_failure_code_has_a_user_message() -> None:
    assert set(FAILURE_MESSAGES) == set(FailureCode)
    assert set(FAILURE_HINTS) <= set(FailureCode)


def test_an_unknown_or_empty_code_reads_as_upstream_failed() -> None:
    expected = FAILURE_MESSAGES[FailureCode.UPSTREAM_FAILED]
    assert failure_message("no_such_code") == failure_message("") == expected
    assert FailureCode.of("no_such_code") is None
    assert FailureCode.of("outcome_unknown") is FailureCode.OUTCOME_UNKNOWN


def test_error_code_choices_are_the_failure_codes() -> None:
    assert Generation._meta.get_field("error_code").choices == FailureCode.choices
