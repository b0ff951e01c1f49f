"""The KV-affinity dispatcher: session pinning, admission control and placement over model replicas."""
