"""Storage: the results table, its typed item, the work queue and the batch bucket (the only place boto3 appears)."""
