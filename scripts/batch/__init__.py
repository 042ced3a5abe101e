"""Batch pre-generation from the command line: requests queued into the results table
(``python -m scripts.batch.enqueue``), finished results exported (``python -m scripts.batch.export``); service.py
builds the service for a table outside Lambda."""
