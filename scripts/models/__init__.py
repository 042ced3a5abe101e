"""Models and their manifests: download and verify a manifest's GGUF, and generate random-weight models.

manifest.py, sources.py, errors.py and download.py use the standard library only: the image's model stage runs
``python -m scripts.models.download`` without the service's dependencies. random_model.py (with architectures.py
and phi3_vocab.py) writes the deterministic test and benchmark models with real models' shapes and needs gguf and
numpy.
"""
