"""Range extraction between IIS stages: the evidence per value and the narrowed space."""
