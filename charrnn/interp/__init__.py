"""Looking inside a model: one pass of a text, probes, ablation, match, features, views."""
