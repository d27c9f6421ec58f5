"""iishpo: hyperparameter optimization of CNNs with increasing image sizes (IIS)."""

__version__ = "0.1.0"
