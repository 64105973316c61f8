"""seqattn.analysis: what a trained model's attention, codebook and layers do, measured on real inputs.

- :mod:`.attention`: how local each head is (mean distance, mass inside +-w, w90/w95, entropy, self mass);
- :mod:`.codebook`: which quantizer entries each language uses and how languages overlap;
- :mod:`.layers`: linear probes for language and language family per layer;
- :mod:`.localize`: turn a full-attention model into a local one with windows chosen from the attention
  analysis.

Everything here reads models and data and writes JSON/CSV/plots; nothing imports the CLI.
"""
