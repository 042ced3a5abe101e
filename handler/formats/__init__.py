"""Wire formats over the domain: OpenAI shapes, server-sent events, batch-file lines, JSON output, prompts (pure)."""
