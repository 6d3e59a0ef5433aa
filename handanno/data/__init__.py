"""Data conventions, label formats and metrics: the bottom layer of handanno."""
