"""Single-cell crops and the classifiers that read them (timm backbones)."""
