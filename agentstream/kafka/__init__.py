"""The thin Kafka shell around the pure processor cores."""
