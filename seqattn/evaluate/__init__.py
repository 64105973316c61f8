"""Evaluating trained models: language-model perplexity over files (:mod:`.perplexity`)."""
