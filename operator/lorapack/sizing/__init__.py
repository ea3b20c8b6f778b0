"""Sizing: what vLLM will do with a base model on a GPU (pure arithmetic, no I/O).

    catalog     model architectures and GPU types (lookup_model, lookup_gpu, config.json loading)
    adapters    one adapter's demand: parameters, file bytes, host bytes (used by placement)
    memory      one engine's GPU memory: weights, LoRA slots, overhead, KV cache (estimate)
    recommend   engine-setting advice and the merged vs multi-LoRA GPU comparison

Called by `lorapack size` and by the layers above (planning, status) through `from_pool_spec`
and `adapter_demand`. The formulas and their sources are explained in docs/sizing.md.
"""
