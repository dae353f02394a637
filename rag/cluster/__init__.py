"""Running rag's work on a cluster: indexing on Ray (`rag index --ray`)."""
