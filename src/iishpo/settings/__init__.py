"""The validated configuration: loading ``conf/`` with Hydra, the strategies a study may
use, and the settings groups' types. Imports no torch."""
