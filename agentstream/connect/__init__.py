"""The audit warehouse's Kafka Connect side: the pinned worker and Iceberg sink jars (`jars`), the
worker process (`worker`), the Iceberg sink connector's configuration (`sink`), the journal's sink
and its dead letters (`journal`), a minimal reader of the tables (`tables`), and the platform's
own worker built from its settings (`local`)."""
