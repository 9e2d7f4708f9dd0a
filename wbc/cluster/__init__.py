"""Unsupervised grouping of cell crops (``python cluster.py``): embeddings from a chosen encoder,
k-means, then deep embedded clustering (DEC, Xie et al. 2016), scored against labels where they exist."""
