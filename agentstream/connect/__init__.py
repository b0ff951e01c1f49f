"""The audit warehouse's Kafka Connect side: the pinned worker and Iceberg sink jars (`jars`), the
worker process (`worker`), the Iceberg sink connector's configuration (`sink`), and the platform's
own worker built from its settings (`local`)."""
