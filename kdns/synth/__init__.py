"""Answer synthesis: deciding what the cluster's names answer, from an ``Index``."""
