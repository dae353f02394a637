"""What the local model reads: the passages' best sentences, in reading order, with the real embedder."""

import numpy as np

from rag.focus import GAP, focus_texts, split_sentences
from rag.prompt import PromptBuilder
from test_prompt import EN, ZH, hit

TRAVEL = """5. Meals and daily allowance
Instead of claiming meal receipts, travellers receive a daily meal allowance (per diem) for each full travel day.
Destination Daily meal allowance
Portugal EUR 45
United States USD 75
6. Expense claims
Submit expenses in SAP Concur within 30 days after the end of the trip.
Attach an itemised receipt for every expense above EUR 25.
7. Private car use
Mileage is reimbursed at EUR 0.40 per km."""
PRINTERS = "Printer PRN-7 is on floor 3 next to the kitchen. Toner is ordered by Ana Ribeiro from facilities."


def test_sentences_and_lines_split():
    assert split_sentences("One sentence. Two here.\nA row 45\n\n上海。北京！") == [
        "One sentence.", "Two here.", "A row 45", "上海。", "北京！"]


def test_the_best_sentences_are_kept_in_reading_order_with_gaps_marked(embedder):
    travel, printers = focus_texts(embedder, "How soon must I submit my expenses in SAP Concur?", [TRAVEL, PRINTERS], 2)
    kept = [line for line in travel.split("\n") if line != GAP]
    assert "Submit expenses in SAP Concur within 30 days after the end of the trip." in kept
    assert len(kept) == 2 and travel.startswith(GAP)
    assert kept == [s for s in split_sentences(TRAVEL) if s in kept]  # reading order
    assert printers == ""  # none of its sentences made it


def test_short_passages_are_left_whole(embedder):
    assert focus_texts(embedder, "Who orders toner?", [PRINTERS], 5) == [PRINTERS]


def test_the_prompt_shows_excerpts_but_passages_and_citations_keep_whole_texts(embedder):
    builder = PromptBuilder({"en": EN, "zh": ZH}, lambda s: len(s.split()), 10_000, 20,
                            focus=lambda q, texts: focus_texts(embedder, q, texts, 3))
    prompt = builder.build("Who orders the printer toner?", [hit("travel.md", 0, TRAVEL, 0.9, 1),
                                                             hit("printers.md", 0, PRINTERS, 0.8, 2)])
    assert "Ana Ribeiro" in prompt.user and "Mileage" not in prompt.user
    # a passage none of whose sentences was kept is not shown; the rest are renumbered from 1
    shown = [p.doc_id for p in prompt.passages]
    assert shown[0] == "printers.md" or "printers.md" in shown
    assert all(p.text in (TRAVEL, PRINTERS) for p in prompt.passages)


def test_a_kept_table_row_keeps_its_tables_header(embedder):
    leave = ("Annual leave by office:\n| Office | Annual leave | Made up of |\n|---|---|---|\n"
             "| Lisbon | 25 working days | 22 statutory days plus 3 Meridian days |\n"
             "| Austin | 20 working days | 20 company days |\n| Shanghai | 15 working days | 5 statutory days plus 10 |\n"
             "Unused days may be carried over until 31 March.")
    (focused,) = focus_texts(embedder, "How many statutory days and Meridian days do Lisbon staff get?", [leave], 1)
    lines = [line for line in focused.split("\n") if line != GAP]
    lisbon = next(i for i, line in enumerate(lines) if line.startswith("| Lisbon |"))
    assert "| Office | Annual leave | Made up of |" in lines[:lisbon], "the header comes with the row"
    assert len(lines) == 2 and "| Austin |" not in focused


def test_a_question_just_searched_for_is_not_embedded_again(embedder):
    """Answering embeds its question to search and again to pick sentences: the second is the
    first's vector, and only the last few questions are kept."""
    from rag.embed import RECENT_QUERIES

    question = "Who orders toner for printer PRN-7?"
    first = embedder.embed_queries([question])
    calls = []
    encode = embedder._encode
    embedder._encode = lambda texts, prefix: calls.append(list(texts)) or encode(texts, prefix)
    try:
        again = embedder.embed_queries(["Where is PRN-7?", question])
        assert calls == [["Where is PRN-7?"]], "only the new question is encoded"
        np.testing.assert_array_equal(again[1], first[0])
        assert np.allclose(again[0], encode(["Where is PRN-7?"], embedder.settings.query_prefix)[0], atol=1e-6)
        embedder.embed_queries([f"question {i}?" for i in range(RECENT_QUERIES)])
        calls.clear()
        embedder.embed_queries([question])
        assert calls == [[question]], "an old question is embedded afresh"
        assert embedder.embed_queries([]).shape == (0, embedder.dimension)
    finally:
        del embedder._encode
