"""Storage: the results table (a store of parts), the work queue and the batch bucket (the only place boto3 appears)."""
