"""The domain: what a request is (its options, limits and JSON schemas), what its answer is, and the item a
request is stored as (with what one item can hold). Pydantic types and pure rules, no wire format."""
