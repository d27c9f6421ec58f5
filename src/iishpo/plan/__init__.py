"""What a study's DAG is made of: every job and file of a study, and what each job asks of
the machine. The Snakefile reads it; it imports no torch."""
