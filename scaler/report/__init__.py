"""Reports: figures and tables written from a study's files."""
