"""Batch scoring of files: stream texts in chunks, score each chunk, write numbered shards, resume, finish atomically.

``job.score_files`` is the entry point (CLI and flow); ``local.score_chunk`` is the engine-independent unit of work.
"""
