"""What a study's outputs hold and how they are read: records with provenance, the summary,
paired comparisons, importances, figures and the export to Optuna."""
