"""seqattn: multilingual speech and sequence modelling on 1D local and routed attention."""
__version__ = "0.1.0"
