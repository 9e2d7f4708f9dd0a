"""Per-box morphological attributes predicted from the detector's own feature maps."""
