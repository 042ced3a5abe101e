"""Wire formats: request and answer schemas, OpenAI shapes, batch-file lines, JSON output rules, prompts (pure)."""
