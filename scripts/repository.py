"""The repository's root and the named defaults that the scripts share: one copy of each fact.

Standard library only: the image's build and model stages import it without the service's dependencies.
The Dockerfile's ``ARG MODEL`` and the Makefile's ``MODEL`` and ``REAL_MODEL`` repeat two of these names (neither
can import Python); keep them in step.
"""

from __future__ import annotations

from pathlib import Path

#: The repository's root: the folder above scripts/.
ROOT = Path(__file__).resolve().parent.parent

#: The SAM template that defines the stack (the results table, the functions).
TEMPLATE = ROOT / "template.yaml"

#: The model manifests, one ``NAME.json`` per model (layers/models/).
MANIFEST_DIR = ROOT / "layers" / "models"

#: The model the service serves unless told otherwise: the manifest the image bakes in by default (the
#: Dockerfile's MODEL), the download's default and the model whose request ids the batch scripts write.
SERVED_MODEL = "phi-3-mini-4k-instruct-q4"

#: The small real instruct model (SmolLM2-135M-Instruct, from a PyPI wheel): the tests' real model, and the one
#: the local image builds bake in (`make sam-build`, `make image-arm64`). The Makefile's REAL_MODEL.
SMALL_REAL_MODEL = "smollm2-135m-instruct-q4_1"
#: Where `make` downloads it (the Makefile's REAL_MODEL_FILE): the drafting benchmark and the engines' greedy
#: agreement read it there.
SMALL_REAL_MODEL_FILE = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"

#: The benchmark's model, Phi-3-mini's shapes with random weights, generated on first use. Relative to the
#: repository root, where `make bench` runs, so the report prints it as given.
BENCH_MODEL = Path("models/bench/phi3-mini-random-q4_k_m.gguf")
