"""Files in, index version out: discover, load, decide, chunk, embed, write, commit.

    sources    what a run reads: events from its sources; who prepares them (here, or Ray)
    decisions  what the run does with each document (new, changed, unchanged, alias, ...)
    batches    embedding on its own thread while the next batch is read, then writing
    sync       `--sync`: removing what the sources no longer hold, within its limits
    report     counts, problems, stages and progress
    run        Indexer: one run, from its sources to one committed version
"""

from rag.indexing.report import IndexProgress, IndexReport, Problem
from rag.indexing.run import Indexer, chunking_identity, make_chunker
from rag.indexing.seen import SeenIds
from rag.indexing.sources import (STREAM_ORIGIN, IndexState, LocalPreparer, Prepared, Preparer, PreparerFactory,
                                  loaded_documents)

__all__ = ["STREAM_ORIGIN", "IndexProgress", "IndexReport", "IndexState", "Indexer", "LocalPreparer", "Prepared",
           "Preparer", "PreparerFactory", "Problem", "SeenIds", "chunking_identity", "loaded_documents",
           "make_chunker"]
