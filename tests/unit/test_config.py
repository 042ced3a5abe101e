"""Environment settings: defaults, validation, errors that name the variable."""

from __future__ import annotations

import os

import pytest

from handler.core.errors import ConfigurationError
from handler.core.settings import available_cpus, settings_from


def test_settings_threads_default_to_cpus_this_process_may_use() -> None:
    settings = settings_from({"MODEL_PATH": "/models/m.gguf"})

    assert settings.n_threads == len(os.sched_getaffinity(0)) == available_cpus()
    assert settings.threads_batch == settings.n_threads


def test_settings_read_from_environment_names() -> None:
    settings = settings_from(
        {"MODEL_PATH": "/m.gguf", "N_CTX": "2048", "N_THREADS": "6", "TABLE_NAME": "results", "USE_MMAP": "true"}
    )

    assert (settings.n_ctx, settings.n_threads, settings.table_name, settings.use_mmap) == (2048, 6, "results", True)


def test_settings_empty_table_name_disables_storing() -> None:
    assert settings_from({"MODEL_PATH": "/m.gguf", "TABLE_NAME": ""}).table_name is None


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "MODEL_PATH: Field required"),
        (
            {"MODEL_PATH": "/m.gguf", "N_THREADS": "0"},
            "N_THREADS: Input should be greater than or equal to 1 (got '0')",
        ),
        ({"MODEL_PATH": "/m.gguf", "N_CTX": "lots"}, "N_CTX: Input should be a valid integer"),
        ({"MODEL_PATH": "/m.gguf", "MODEL_SHA256": "abc"}, "MODEL_SHA256: String should match pattern"),
        ({"MODEL_PATH": "/m.gguf", "KV_CACHE_TYPE_K": "q4_k"}, "KV_CACHE_TYPE_K: Input should be 'q8_0' or 'f16'"),
    ],
)
def test_settings_invalid_value_names_the_variable(environ: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        settings_from(environ)

    assert expected in caught.value.message
