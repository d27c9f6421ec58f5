"""The search space: parameters, their ranges per resolution, and the names the code reads."""
