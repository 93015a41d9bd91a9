"""Model registry and model files: where each model comes from, and its checked local copy."""
