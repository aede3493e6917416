"""The CRD files and the spec reference are generated from the spec's models: fail on drift."""

from __future__ import annotations

import yaml

from clarion_devstack import crdgen
from clarion_devstack.crdgen import crd_manifest


def test_generated_files_match_the_generator() -> None:
    stale = crdgen.stale()
    assert not stale, (
        f"stale generated files {stale}: run python -m clarion_devstack.crdgen --write"
    )


def test_committed_crd_parses_to_the_manifest() -> None:
    for path in crdgen.CRD_FILES:
        assert yaml.safe_load((crdgen.ROOT / path).read_text()) == crd_manifest()


def test_reference_lists_every_spec_field_once() -> None:
    text = crdgen.reference()
    for path in ("spec.kafka.bootstrapServers", "spec.topics[].deletionPolicy", "spec.auth.mode"):
        assert text.count(f"| `{path}` |") == 1
