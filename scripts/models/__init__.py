"""Models and their manifests: download and verify a manifest's GGUF, and generate the phi3 test model.

manifest.py, sources.py, errors.py and download.py use the standard library only: the image's model stage runs
``python -m scripts.models.download`` without the service's dependencies. random_phi3.py (with phi3_vocab.py)
writes the deterministic test model and needs gguf and numpy.
"""
