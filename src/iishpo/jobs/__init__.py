"""The jobs the DAG runs: an optimizer stage, a test-set evaluation, GPU claiming."""
