"""Models built on seqattn.nn."""
