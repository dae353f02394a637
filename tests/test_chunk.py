import random

import pytest

from rag.chunk import Chunker, HFTokenCounter
from rag.config import Settings
from rag.indexing import make_chunker
from rag.records import Document, Section


@pytest.fixture(scope="module")
def counter(embedder):
    return HFTokenCounter(embedder.tokenizer)


def chunker_with(embedder, **overrides):
    settings = Settings.load(overrides=overrides, environ={})
    return make_chunker(settings, embedder)


def doc(*sections, doc_id="d"):
    return Document(doc_id, list(sections), {"source": "s", "title": "t", "sha256": "0" * 64})


def test_chunks_respect_size_in_tokens_and_break_at_sentences(embedder, counter):
    sentences = [f"Sentence number {i} talks about warehouse robot safety rules." for i in range(120)]
    chunker = chunker_with(embedder, **{"chunking.chunk_size": 64, "chunking.chunk_overlap": 16})
    chunks = chunker.chunk(doc(Section(" ".join(sentences))))
    assert len(chunks) > 5
    for c in chunks:
        assert counter.count(c.text) <= 64
        assert c.text.endswith("."), c.text[-30:]  # ends at a sentence boundary
    # Overlap: consecutive chunks share text.
    assert chunks[0].text.split(". ")[-1] in chunks[1].text


def test_chinese_text_breaks_at_chinese_punctuation(embedder, counter):
    text = "".join(f"第{i}条：员工食堂位于三号楼地下一层，早餐时间为七点半至九点。" for i in range(60))
    chunker = chunker_with(embedder, **{"chunking.chunk_size": 80, "chunking.chunk_overlap": 10})
    chunks = chunker.chunk(doc(Section(text)))
    assert len(chunks) > 3
    for c in chunks:
        assert counter.count(c.text) <= 80
        assert c.text.endswith("。")


def test_no_chunk_exceeds_the_model_limit_even_with_huge_words_and_headings(embedder, counter):
    random.seed(1)
    word = "".join(random.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(5000))
    headings = tuple(f"Very long heading number {i} about procurement policies" for i in range(12))
    chunker = chunker_with(embedder, **{"chunking.chunk_size": 8000, "chunking.chunk_overlap": 10})
    chunks = chunker.chunk(doc(Section(word + " tail text", headings=headings)))
    limit = embedder.max_seq_length - counter.special_tokens
    assert chunks and all(counter.count(c.embed_text) <= limit for c in chunks)
    # Nothing is lost: every character of the word is in some chunk.
    assert "".join(c.text for c in chunks).replace(" ", "").startswith(word[:1000])
    assert sum(len(c.text) for c in chunks) >= len(word)
    # A heading path too long for the budget is shortened from the left, keeping the deepest.
    assert chunks[0].embed_text.split("\n")[0].endswith(headings[-1])


def test_heading_path_is_prepended_to_the_embedded_text_only(embedder):
    chunker = chunker_with(embedder)
    (chunk,) = chunker.chunk(doc(Section("Parents receive 16 weeks.", headings=("Handbook", "Leave"))))
    assert chunk.text == "Parents receive 16 weeks."
    assert chunk.embed_text == "Handbook > Leave\nParents receive 16 weeks."
    assert chunk.metadata["headings"] == ["Handbook", "Leave"]
    plain = chunker_with(embedder, **{"chunking.heading_prefix": False})
    assert plain.chunk(doc(Section("x y z", headings=("H",))))[0].embed_text == "x y z"


def test_sections_never_share_a_chunk_and_keep_their_page(embedder):
    chunker = chunker_with(embedder)
    chunks = chunker.chunk(doc(Section("Page one words.", page=1), Section("Page two words.", page=2)))
    assert [(c.text, c.metadata["page"]) for c in chunks] == [("Page one words.", 1), ("Page two words.", 2)]


def test_csv_row_groups_repeat_the_header(embedder, counter):
    rows = tuple(f"P-{i:03d} | Spare part number {i} with a longer description | {i}.50" for i in range(100))
    chunker = chunker_with(embedder, **{"chunking.chunk_size": 120, "ingest.csv_rows_per_chunk": 8})
    chunks = chunker.chunk(doc(Section("", table_header="part | description | price", table_rows=rows)))
    covered = []
    for c in chunks:
        lines = c.text.split("\n")
        assert lines[0] == "part | description | price"
        assert 1 <= len(lines) - 1 <= 8
        assert counter.count(c.embed_text) <= 120
        first, last = c.metadata["rows"]
        assert lines[1:] == list(rows[first - 1:last])
        covered.extend(range(first, last + 1))
    assert covered == list(range(1, 101))


def test_passage_prefix_counts_against_the_limit(embedder, counter):
    prefix = "passage: " * 20
    chunker = chunker_with(embedder, **{"embedding.passage_prefix": prefix, "chunking.chunk_size": 8000})
    chunks = chunker.chunk(doc(Section("word " * 2000)))
    limit = embedder.max_seq_length - counter.special_tokens
    assert all(counter.count(prefix + c.embed_text) <= limit for c in chunks)


def test_chunker_rejects_an_impossible_budget(counter):
    with pytest.raises(ValueError):
        Chunker(Settings.load(environ={}).chunking, counter, max_tokens=4)


def test_counts_stay_exact_after_the_model_has_encoded(embedder):
    """sentence-transformers switches padding and truncation on in the model's tokenizer at
    its first encode; counting must not inherit either (found by the indexing benchmark)."""
    counter = HFTokenCounter(embedder.tokenizer)
    long_text = "warehouse " * 600
    embedder.embed_passages(["a short passage", long_text])
    assert counter.count_many(["short text", "one two three four five six seven"]) == [2, 7]
    assert counter.count(long_text) == 600 > embedder.max_seq_length
    chunks = make_chunker(Settings.load(environ={}), embedder).chunk(doc(Section("Short intro.\n\n" + long_text)))
    assert all(counter.count(c.embed_text) <= embedder.max_seq_length - counter.special_tokens for c in chunks)
    assert sum(counter.count(c.text) for c in chunks) >= 600


def test_chunk_ids_are_exactly_what_the_tokenizer_makes_of_the_embedded_text(embedder, counter):
    """Chunks take their ids from a slice of their section's, tokenized once; that must be what
    tokenizing the chunk alone gives, whatever sits at the cuts: control characters that BERT's
    normalizer deletes (joining the words beside them), no-break and zero-width spaces, tabs,
    accents, Chinese, words cut into token windows."""
    random.seed(7)
    pieces = ["Warehouse robots stop at 2 m.", "naïve café résumé", "第3条：员工食堂位于三号楼。", "x\x1cy",
              "tab\tseparated", "no\u00a0break", "zero\u200bwidth", "e.g. (see §4.2); cf. [12].", "UPPER lower",
              "\n\n", "\n", "  ", "a—b", "🙂 emoji"]
    # Words longer than the budget, which the chunker cuts between word pieces.
    pieces += ["".join(random.choice("abcdefghijé\x1c") for _ in range(random.randint(30, 95))) for _ in range(20)]
    text = " ".join(random.choice(pieces) for _ in range(700))
    chunker = chunker_with(embedder, **{"chunking.chunk_size": 16, "chunking.chunk_overlap": 4})
    chunks = chunker.chunk(doc(Section(text, headings=("Manual", "Ch. 1"))))
    assert len(chunks) > 50 and all(c.token_ids is not None for c in chunks)
    assert [c.token_ids for c in chunks] == counter.encode_many([c.embed_text for c in chunks])
    assert counter.context_free  # so most of those ids were sliced, not tokenized again


def test_chunks_are_unchanged_text_of_their_section(embedder):
    text = "Intro line.\n\n\n   \nSecond paragraph, which is long. " * 30
    chunker = chunker_with(embedder, **{"chunking.chunk_size": 32, "chunking.chunk_overlap": 8})
    for c in chunker.chunk(doc(Section(text))):
        assert c.text in text and c.text == c.text.strip()


def test_a_tokenizer_that_is_not_word_by_word_gets_every_chunk_tokenized(embedder):
    """A byte-level or SentencePiece tokenizer may tokenize a word by its neighbours: its chunks
    are tokenized alone, never sliced."""
    from tokenizers import Tokenizer, pre_tokenizers

    backend = Tokenizer.from_str(embedder.tokenizer.to_str() if hasattr(embedder.tokenizer, "to_str")
                                 else embedder.tokenizer.backend_tokenizer.to_str())
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    counter = HFTokenCounter(backend)
    assert not counter.context_free
    chunker = Chunker(Settings.load(environ={}).chunking, counter, max_tokens=64)
    text = "Warehouse robots stop at two metres from people. " * 40
    chunks = chunker.chunk(doc(Section(text)))
    assert [c.token_ids for c in chunks] == counter.encode_many([c.embed_text for c in chunks])
