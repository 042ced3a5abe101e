"""The model menu's manifests (layers/models/): each menu model pinned to one Q4_K_M file of the Hugging Face Hub
under a permissive license, its notes naming where the pins came from.
"""

from __future__ import annotations

import pytest

from scripts.models.manifest import HubSource, load_manifest, manifest_path

# The default model first, then the smaller ones the menu prices against it.
MENU_MODELS = (
    "phi-3-mini-4k-instruct-q4",
    "qwen3-4b-q4",
    "qwen3-1.7b-q4",
    "smollm2-1.7b-instruct-q4",
    "qwen2.5-1.5b-instruct-q4",
)
# The menu offers weights anyone may run commercially: no custom or research-only licenses.
PERMISSIVE_LICENSES = {"Apache-2.0", "MIT"}


@pytest.mark.parametrize("name", MENU_MODELS)
def test_menu_model_is_a_pinned_permissive_q4_k_m_hub_file(name: str) -> None:
    manifest = load_manifest(manifest_path(name))

    assert isinstance(manifest.source, HubSource)
    assert len(manifest.source.revision) == 40
    assert manifest.pinned
    assert manifest.size_bytes is not None
    assert manifest.quantization == "Q4_K_M"
    assert manifest.license in PERMISSIVE_LICENSES


@pytest.mark.parametrize("name", MENU_MODELS)
def test_menu_model_notes_say_the_pins_were_not_computed_here(name: str) -> None:
    # A Hub pin comes from public projects that agree; the notes must say so, not imply a local download.
    notes = load_manifest(manifest_path(name)).source_notes

    assert "not computed here" in notes
    assert "sha256" in notes
