"""Shared leaves: settings, errors, logging and metrics singletons, file helpers."""
