"""Measuring: the domain classifier, the feature extractors, the scores and the utility stage."""
