"""The recorder: syscall events and every process's spans into DuckDB, Parquet archives on S3."""
