"""How fast one emulated model replica is, and how much KV cache it holds.

`DEFAULT_8B_H100` stands for Llama-3.1-8B-Instruct in bf16 on one H100 80GB under vLLM
(gpu_memory_utilization 0.9, block size 16). Where the figures come from:

KV capacity (derived from the model config, not measured):
  KV bytes/token = 2 (K and V) x 32 layers x 8 KV heads x 128 head dim x 2 bytes = 131,072 B = 128 KiB,
  i.e. 8,192 tokens per GiB.
  80 GiB x 0.9 gpu_memory_utilization = 72 GiB
  - 15 GiB weights ("Loading model weights took 14.9888 GB" for meta-llama/Llama-3.1-8B-Instruct in a vLLM
    log, https://github.com/vllm-project/vllm/issues/10517)
  - 4 GiB activation peak, CUDA graphs and non-torch memory (our estimate; vLLM profiles it at start-up)
  = 53 GiB -> 53 x 8,192 = 434,176 tokens = 27,136 blocks of 16.

Decode (inter-token latency):
  NVIDIA NIM LLM benchmarking, "Llama-3.1-8b-instruct Results", NIM 1.8.0
  (https://docs.nvidia.com/nim/benchmarking/llm/1.0.0/performance): ITL 4.63 ms at concurrency 1,
  5.19 ms at 25, 5.91 ms at 50, 7.57 ms at 100, 12.65 ms at 200 (TTFT 10.26 ms at concurrency 1).
  The excerpt we could read did not show that table's precision or sequence lengths; NIM's other tables
  on that page are fp8 TensorRT-LLM, so we treat 4.6 ms as a lower bound for bf16 vLLM. A bf16 decode
  step must stream the ~16 GB of weights through H100's ~3.35 TB/s HBM: ~4.8 ms before any overhead.
  We pick 7 ms for a lone request and a batch slowdown of 1.0 (ITL doubles as the batch fills all
  `max_running` slots: ~10.5 ms at 128 running, 14 ms at 256), which sits in the 10-15 ms that
  vLLM bf16 deployments report at moderate batch and tracks NIM's 1.6x (c=100) to 2.7x (c=200) growth.

Prefill:
  We found no published single-request TTFT-vs-prompt-length curve for 8B bf16 on H100 we could read
  in full, so this is a documented estimate. Bounds used:
  - Upper: the same NIM page reports Llama-3.3-70B fp8 TP2 on 2 x H100 with 5,000 input tokens at
    TTFT 406.77 ms (concurrency 1), ~12,300 prompt tokens/s for 70B on two GPUs. Scaling by parameters
    (70/8) and GPUs (1/2) gives ~54,000 tokens/s for 8B fp8 on one GPU, ~27,000 in bf16 (half the FLOPS).
  - Lower: vLLM's own `vllm bench serve` example for Llama-3.1-8B-Instruct
    (https://github.com/vllm-project/vllm/pull/18566) sustains 14,029 total tokens/s with 1,000 ShareGPT
    requests arriving at once, prefill and decode together.
  We pick 15,000 tokens/s (66.7 us/token): a 2,000-token prompt prefills in ~133 ms, conservative
  against the compute bound because chunked prefill shares steps with running decodes.

max_running: vLLM's long-standing default `max_num_seqs` of 256.

Prefill-decode interference (prefill_chunk_tokens):
  One GPU runs both phases. vLLM schedules with chunked prefill: each step batches every running decode
  and fills the rest of a `max_num_batched_tokens` budget with prompt chunks, so a decode's step is
  as long as the chunk riding with it. vLLM's tuning guide ("Optimization and Tuning", chunked
  prefill: "smaller max_num_batched_tokens achieves better ITL because there are fewer prefills
  interrupting decodes"; a default of 2048 when it was introduced) and Sarathi-Serve (Agrawal et al.,
  OSDI '24: prefills stall ongoing decodes; chunking bounds each stall to one chunk) describe it. We
  use 2,048: a 2,048-token chunk is ~137 ms at 15,000 tokens/s, so a decode sharing steps with a
  prefill gets a token every ~144 ms instead of every 7. The total delay a prefill adds to each
  stream is its compute time whatever the chunk size; the size only sets how finely it is spread.
"""

from __future__ import annotations

from dataclasses import dataclass

# A capacity no workload reaches: the "oracle" replica that never evicts. An int rather than None so
# every capacity computation stays plain integer arithmetic.
UNLIMITED_KV_TOKENS = 2**62

# vLLM's default KV block size; only used to report `num_gpu_blocks` the way vLLM does.
BLOCK_SIZE = 16


@dataclass(frozen=True, slots=True)
class ReplicaProfile:
    kv_capacity_tokens: int
    prefill_s_per_token: float
    # Inter-token latency of a request decoding alone.
    decode_s_per_token: float
    # Continuous-batching slots (vLLM's max_num_seqs).
    max_running: int
    # Every emulated duration is multiplied by this, so a bench can run an hour of traffic in a minute.
    time_scale: float = 1.0
    # ITL grows by this fraction of itself as the batch goes from 1 to `max_running` running requests:
    # decode steps are memory-bound, so extra sequences cost little until attention reads dominate.
    decode_batch_slowdown: float = 0.0
    # Prompt tokens per engine step while a prefill shares steps with decodes (vLLM's
    # max_num_batched_tokens under chunked prefill); 0: prefill never slows decodes (an idealisation).
    prefill_chunk_tokens: int = 0

    def __post_init__(self) -> None:
        if self.kv_capacity_tokens <= 0:
            raise ValueError("kv_capacity_tokens must be positive")
        if self.max_running <= 0:
            raise ValueError("max_running must be positive")
        if self.prefill_chunk_tokens < 0:
            raise ValueError("prefill_chunk_tokens must not be negative (0 turns the interference off)")
        if self.prefill_s_per_token < 0 or self.decode_s_per_token < 0 or self.decode_batch_slowdown < 0:
            raise ValueError("per-token costs and the batch slowdown must not be negative")
        if self.time_scale <= 0:
            raise ValueError("time_scale must be positive")

    @property
    def unlimited_kv(self) -> bool:
        return self.kv_capacity_tokens >= UNLIMITED_KV_TOKENS

    def with_changes(
        self,
        *,
        kv_capacity_tokens: int | None = None,
        prefill_s_per_token: float | None = None,
        decode_s_per_token: float | None = None,
        max_running: int | None = None,
        time_scale: float | None = None,
        decode_batch_slowdown: float | None = None,
        prefill_chunk_tokens: int | None = None,
    ) -> ReplicaProfile:
        """A copy with the given fields replaced; None keeps the current value (CLI overrides)."""

        def pick(new: float | None, old: float) -> float:
            return old if new is None else new

        return ReplicaProfile(
            kv_capacity_tokens=self.kv_capacity_tokens if kv_capacity_tokens is None else kv_capacity_tokens,
            prefill_s_per_token=pick(prefill_s_per_token, self.prefill_s_per_token),
            decode_s_per_token=pick(decode_s_per_token, self.decode_s_per_token),
            max_running=self.max_running if max_running is None else max_running,
            time_scale=pick(time_scale, self.time_scale),
            decode_batch_slowdown=pick(decode_batch_slowdown, self.decode_batch_slowdown),
            prefill_chunk_tokens=self.prefill_chunk_tokens if prefill_chunk_tokens is None else prefill_chunk_tokens,
        )


DEFAULT_8B_H100 = ReplicaProfile(
    kv_capacity_tokens=434_176,
    prefill_s_per_token=1 / 15_000,
    decode_s_per_token=0.007,
    max_running=256,
    time_scale=1.0,
    decode_batch_slowdown=1.0,
    prefill_chunk_tokens=2048,
)
