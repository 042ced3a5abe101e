"""Lambda entry points, one module per function: decorators, parse, call one use case, answer."""
