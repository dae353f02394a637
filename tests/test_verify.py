"""The check of an answer against the passages it was given (rag/verify.py), and what the
answering pipeline does with it: re-cite a supported answer, refuse a made-up one."""

from __future__ import annotations

from rag.answer import Passage
from rag.verify import is_supported, support

LEAVE = Passage(1, "| Lisbon | 25 working days | 22 statutory days plus 3 Meridian days |", "handbook/leave.md",
                "handbook/leave.md", "Leave", "", 0.9, (1,))
CANTEEN = Passage(2, "A daily menu with soup, main course and fruit costs EUR 4.50 for employees.", "lisbon.html",
                  "offices/lisbon.html", "Lisbon HQ", "", 0.8, (2,))
SHANGHAI = Passage(3, "门禁卡丢失后补办需支付人民币50元。", "sh.md", "offices/sh.md", "上海办公室指南", "", 0.7, (3,))


def test_the_passage_holding_the_answers_words_and_numbers_supports_it():
    found = support("25 working days", [CANTEEN, LEAVE])
    assert (found.passage, found.numbers, found.words) == (1, True, 1.0) and is_supported(found, 0.5)
    assert support("EUR 4.50 [1]", [LEAVE, CANTEEN]).passage == 2, "a wrong marker does not decide it"
    assert is_supported(support("人民币50元", [LEAVE, SHANGHAI]), 0.5)


def test_a_made_up_number_or_claim_is_not_supported():
    assert not is_supported(support("Meridian's revenue in 2023 was 1,000,000 USD.", [LEAVE, CANTEEN]), 0.5)
    assert not is_supported(support("26 working days", [LEAVE]), 0.5), "every number must be in the passage"
    assert not is_supported(support("FleetOS is written in Rust.", [LEAVE, CANTEEN]), 0.5)
    assert not is_supported(support("人民币80元", [SHANGHAI]), 0.5)


def test_a_figure_with_a_unit_the_passage_leaves_out_stands_on_its_number():
    price = Passage(1, "CD-40 charging dock | 1980.00 | In stock", "p.csv", "p.csv", "Parts", "", 1.0, (1,))
    assert is_supported(support("1980.00 euros", [price]), 0.5)
    assert not is_supported(support("1890.00 euros", [price]), 0.5)


def test_grouping_separators_do_not_change_a_number():
    passage = Passage(1, "Hotels in Shanghai: up to CNY 1,100 per night.", "t", "t", "Travel", "", 1.0, (1,))
    assert is_supported(support("CNY 1100", [passage]), 0.5)
    assert is_supported(support("CNY 1,100 per night [1].", [passage]), 0.5)
