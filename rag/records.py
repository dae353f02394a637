"""Plain typed records passed between the stages of the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# A document's access list (`metadata.acl`): "public", or {"users": [...], "groups": [...]}.
Acl = str | dict[str, list[str]]


@dataclass(frozen=True)
class Section:
    """A run of text that shares one location: a heading path, a PDF page, or a table."""

    text: str
    headings: tuple[str, ...] = ()
    page: int | None = None
    # Tables: the header line repeated in every chunk, and one line per row (text is unused).
    table_header: str | None = None
    table_rows: tuple[str, ...] = ()
    # Each row's number in its source (a sheet's row numbers, empty rows skipped), where they
    # are not simply 1, 2, 3...: a chunk's `rows` then names the sheet's rows.
    row_numbers: tuple[int, ...] = ()
    # What every chunk of the section carries besides: {"slide": 7}, {"sheet": "Prices"},
    # {"ocr": True, "ocr_confidence": 0.97}.
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Document:
    """One source document as loaded, before chunking."""

    doc_id: str
    sections: list[Section]
    metadata: dict[str, Any] = field(default_factory=dict)
    # Bytes of the source it was read from (a file, or one JSONL line): drives progress and ETA.
    size: int = 0
    # Where inside its source it was read, for messages ("export.jsonl line 12"); empty for a whole file.
    where: str = ""
    # Where its text really came from, for identity: the real path of its file, or "stream".
    origin: str = ""
    # Seconds OCR spent reading it, for the run's report; not stored.
    ocr_seconds: float = 0.0

    @property
    def text(self) -> str:
        parts = []
        for s in self.sections:
            if s.table_header is not None:
                parts.append("\n".join((s.table_header, *s.table_rows)))
            else:
                parts.append(s.text)
        return "\n\n".join(p for p in parts if p)


@dataclass(frozen=True)
class Chunk:
    """A piece of a document small enough for the embedding model, with where it came from."""

    doc_id: str
    ordinal: int
    text: str
    # What is embedded: the text, with the heading path in front when configured.
    embed_text: str
    metadata: dict[str, Any]
    # embed_text's token ids (no special tokens), as the chunker counted them: the encoder takes
    # them instead of tokenizing the text again. Not stored.
    token_ids: list[int] | None = field(default=None, compare=False, repr=False)


def location_of(metadata: dict[str, Any]) -> str:
    """Where in its document a chunk is, as a person would look for it: "page 3", "slide 7
    (Lisbon HQ energy)", "sheet Prices, rows 2-40", or its heading path."""
    if metadata.get("page") is not None:
        return f"page {metadata['page']}"
    if metadata.get("slide") is not None:
        headings = metadata.get("headings")
        return f"slide {metadata['slide']} ({headings[-1]})" if headings else f"slide {metadata['slide']}"
    if metadata.get("sheet") is not None:
        rows = metadata.get("rows")
        if isinstance(rows, list) and len(rows) == 2:
            span = f"row {rows[0]}" if rows[0] == rows[1] else f"rows {rows[0]}-{rows[1]}"
            return f"sheet {metadata['sheet']}, {span}"
        return f"sheet {metadata['sheet']}"
    if metadata.get("headings"):
        return " > ".join(metadata["headings"])
    return ""


@dataclass(frozen=True)
class Hit:
    """One search result."""

    text: str
    score: float
    doc_id: str
    source: str
    metadata: dict[str, Any]
    chunk_id: int

    @property
    def location(self) -> str:
        """Page, slide, sheet and rows, or heading path, for display."""
        return location_of(self.metadata)

    def as_dict(self) -> dict[str, Any]:
        """The `rag search --json` shape; the chunk id travels in the metadata."""
        return {"text": self.text, "score": self.score, "doc_id": self.doc_id, "source": self.source,
                "metadata": {**self.metadata, "chunk_id": self.chunk_id}}


# -- what the index tells about its documents (listings, the page's filters, `rag info`) ----------


@dataclass(frozen=True)
class DocumentSummary:
    """One indexed document as listed: its identity, where it was read from and its chunk count."""

    collection: str
    doc_id: str
    source: str
    title: str | None
    mtime: float | None
    sha256: str
    format: str | None
    metadata: dict[str, Any]
    indexed_at: str
    chunks: int


@dataclass(frozen=True)
class DocumentPage:
    """One page of a listing, and how many documents match in all."""

    total: int
    offset: int
    limit: int
    documents: list[DocumentSummary]


@dataclass(frozen=True)
class DocumentChunk:
    chunk_id: int
    ordinal: int
    text: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class DocumentDetail:
    """A document with its chunks in reading order (the listing's fields, chunks in full)."""

    collection: str
    doc_id: str
    source: str
    title: str | None
    mtime: float | None
    sha256: str
    format: str | None
    metadata: dict[str, Any]
    indexed_at: str
    chunks: list[DocumentChunk]


@dataclass(frozen=True)
class Facet:
    """A value documents share, how many, and the filter expression selecting exactly it."""

    name: str
    documents: int
    filter: str


@dataclass(frozen=True)
class FolderFacet(Facet):
    path: str = ""


@dataclass(frozen=True)
class TimeRange:
    first: float
    last: float


@dataclass(frozen=True)
class Facets:
    """What the documents matching some filters are made of, for filter controls that never lead
    to an empty result."""

    documents: int
    collections: list[Facet]
    formats: list[Facet]
    folders: list[FolderFacet]
    mtime: TimeRange | None


@dataclass(frozen=True)
class SegmentSummary:
    name: str
    chunks: int
    masked: int
    vectors: int


@dataclass(frozen=True)
class IndexInfo:
    """`rag info`: the live version, its manifest, counts, segments and size on disk."""

    path: str
    version: str
    disk_bytes: int
    files: dict[str, int]  # bytes per kind of file (chunks.sqlite, vectors.faiss, ...), all segments together
    segments: list[SegmentSummary]
    # Vectors no live chunk owns (deleted, in older segments or an HNSW graph), skipped by searches
    # until a merge or `rag compact` drops them.
    masked: int
    collections: dict[str, int]
    manifest: dict[str, Any]


@dataclass(frozen=True)
class CheckReport:
    """`rag check`: what is wrong with the live version; nothing when it is sound."""

    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems
