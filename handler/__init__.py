"""llm-service: summarize, translate and chat with a quantized LLM on AWS Lambda. Layers, top to bottom:
entry, usecases, engine | storage, formats, core (the import contract in pyproject.toml)."""
