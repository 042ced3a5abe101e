"""Use cases: answer a request, queued work, documents, batch files; the rules of the service, without AWS types."""
