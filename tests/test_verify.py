"""The check of an answer against the passages it was given (rag/verify.py), and what the
answering pipeline does with it: re-cite a supported answer, refuse a made-up one."""

from __future__ import annotations

from rag.citations import Passage
from rag.verify import adds_to, is_supported, support, unmentioned_names

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


def test_names_of_the_question_that_no_passage_mentions():
    texts = ["The MR-400 drives at 2.0 m/s.", "Austin office: Meridian's North American hub. The CEO signs off."]
    assert unmentioned_names("What is the maximum speed of the MR-900?", texts) == ["MR-900"]
    assert unmentioned_names("What does Meridian's Berlin office do?", texts) == ["Berlin"]
    assert unmentioned_names("Who does the CFO report to?", texts) == ["CFO"]
    # mentioned (in any case), sentence starts, short acronyms and Chinese are not names to check
    assert unmentioned_names("How fast is the mr-400? What does the Austin office do?", texts) == []
    assert unmentioned_names("Where is the HQ? Which IT ticket ID?", texts) == []
    assert unmentioned_names("How many Grammys has she won?", ["six Grammy Awards"]) == []
    assert unmentioned_names("上海办公室最大的会议室叫什么？", texts) == []


def test_an_answer_that_only_repeats_the_question_says_nothing():
    assert not adds_to("Yes, there is a company gym in Lisbon. [2]", "Is there a company gym in Lisbon?")
    assert not adds_to("2025 [1]", "What date is Founders' Day in 2025?")
    assert adds_to("The extended warranty is called CarePlus [1]", "What is the extended warranty called?")
    assert adds_to("2025-09-19 [1]", "What date is Founders' Day in 2025?")
    assert adds_to("泰山 [1]", "上海办公室最大的会议室叫什么？")
    assert not adds_to("上海办公室最大的会议室", "上海办公室最大的会议室叫什么？")


def test_numbers_written_as_words_match_their_digits():
    totes = Passage(1, "The shelf top module carries six standard totes per level.", "p", "p", "MR-200", "", 1.0, (1,))
    assert is_supported(support("6 totes per level [1]", [totes]), 0.75)
    assert not is_supported(support("7 totes per level [1]", [totes]), 0.75)
    assert is_supported(support("one module carries six totes", [totes]), 0.75), "'one' is not read as a count"


def test_words_and_numbers_the_answer_takes_from_the_question_count_as_supported():
    station = Passage(1, "最近的地铁站是2号线张江高科站，步行约8分钟。", "sh", "sh", "上海办公室指南", "", 1.0, (1,))
    answer = "上海办公室离地铁站2号线张江高科站最近。"
    assert not is_supported(support(answer, [station]), 0.75), "without the question, its words look unsupported"
    assert is_supported(support(answer, [station], "上海办公室离哪个地铁站最近？"), 0.75)
    quotes = Passage(1, "Purchases from 50,000 to 100,000 need 3 written quotes.", "p", "p", "Procurement", "", 1.0, (1,))
    assert is_supported(support("For EUR 60,000 you need 3 written quotes", [quotes], "How many quotes for EUR 60,000?"), 0.75)
    assert not is_supported(support("For EUR 60,000 you need 2 written quotes", [quotes], "How many quotes for EUR 60,000?"), 0.75)
