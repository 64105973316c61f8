"""Checkpoint interop with Hugging Face transformers and fairseq (no dependency on either at import)."""
