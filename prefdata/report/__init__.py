"""Reports: statistics of constructed tables and the dataset card."""
