"""CTC decoding (greedy, beam with lexicon and KenLM), forced alignment for word times, and output writers."""
