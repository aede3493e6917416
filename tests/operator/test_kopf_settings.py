"""kopf's settings derived from the process settings: scanning only where it is needed."""

import pytest

from clarion_operator.handlers import kopf_settings
from clarion_operator.settings import ProcessSettings


@pytest.mark.parametrize(
    ("settings", "disabled"),
    [
        (ProcessSettings(namespaces=("team-a",)), True),
        (ProcessSettings(namespaces=("team-a", "team-b")), True),
        (ProcessSettings(namespaces=("team-*",)), False),
        (ProcessSettings(clusterwide=True), False),
    ],
    ids=["one", "several", "pattern", "cluster-wide"],
)
def test_scanning_is_off_for_exact_namespaces(settings: ProcessSettings, disabled: bool) -> None:
    """A namespaced Role cannot list Namespaces or CRDs; exact names do not need to."""
    assert kopf_settings(settings).scanning.disabled is disabled
