"""Test doubles, and nothing else: the scripted model server (the only fake the project allows:
it speaks the real provider wire protocols and answers from scripted scenarios) and the model
replica emulator (GPU-less inference replicas with a KV cache, for KV-affinity dispatch).

The offline demo, the test suite and the benchmarks use them; a production deployment names real
provider endpoints and never imports this package."""
