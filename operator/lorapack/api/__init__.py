"""lorapack's API: the typed models behind the BaseModelPool and LoraAdapter CRDs.

These pydantic models are the single source of truth: `api.crdgen` generates the CRDs from them,
the operator validates every object it reads through them, and `lorapack plan` checks GitOps
repositories with them.
"""
