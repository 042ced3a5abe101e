"""The real instruct model (SmolLM2-135M-Instruct) under test."""
