"""Prometheus metrics of every process (docs/observability.md): the processor shell's loop and the
events its cores write (`shell.py`, `runs.py`), the gateway's projection (`gateway.py`), the
KV-affinity dispatcher and its prober (`kv.py`), served by `endpoint.py`."""
