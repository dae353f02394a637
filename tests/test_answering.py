"""The answering pipeline over a real index: extractive and OpenAI-compatible generators."""

import pytest

from rag import RagError
from rag.generate.base import GeneratorError

from openai_server import ChatServer


def test_extractive_answer_is_a_cited_sentence_from_the_passages(indexed):
    engine = indexed()
    answer = engine.ask("What does error code E-451 mean?", generator="extractive")
    assert "lidar" in answer.answer and answer.grounded and not answer.abstained
    (citation,) = answer.citations
    assert citation.doc_id == "manual.pdf" and citation.location == "page 2" and "E-451" in citation.quote
    assert answer.answer.endswith(f"[{citation.number}]")
    for stage in ("embed", "search", "prompt", "generation", "total", "first_token"):
        assert stage in answer.timings and answer.timings[stage] >= 0
    assert set(answer.as_dict()) >= {"answer", "citations", "passages", "abstained", "grounded", "timings"}


def test_extractive_abstains_below_its_floor(indexed):
    engine = indexed(**{"answer.extractive_min_score": 1.5})
    answer = engine.ask("What does error code E-451 mean?", generator="extractive")
    assert answer.abstained and answer.answer == "I don't know." and not answer.grounded and not answer.citations


def test_openai_generator_answer_is_cited_and_validated(indexed):
    with ChatServer(reply="Every employee gets 27 days [1]. Also see [9].") as server:
        engine = indexed(**{"answer.generator": "openai", "generate.openai_base_url": server.base_url,
                            "generate.openai_model": "tiny", "answer.k": 3})
        answer = engine.ask("How many vacation days does an employee get?")
        assert answer.answer == "Every employee gets 27 days [1]. Also see."
        assert not answer.grounded  # it cited [9], which was never given
        assert [c.number for c in answer.citations] == [1]
        assert answer.citations[0].doc_id == answer.passages[0].doc_id
        assert answer.tokens == {"prompt": 42, "completion": 9}
        messages = server.requests[0]["body"]["messages"]
        question = messages[-1]["content"]
        assert messages[-1]["role"] == "user" and "[1] " in question and "<<<" in question
        assert "Question: How many vacation days does an employee get?" in question
        assert [m["role"] for m in messages[1:-1]] == ["user", "assistant"] * len(engine.settings.prompt.examples_en), \
            "the worked examples come first"


def test_openai_streaming_yields_pieces_then_the_answer(indexed):
    with ChatServer(reply="Every employee gets 27 days [1].") as server:
        engine = indexed(**{"answer.generator": "openai", "generate.openai_base_url": server.base_url,
                            "generate.openai_model": "tiny"})
        items = list(engine.ask_stream("How many vacation days?"))
        retrieved, pieces, answer = items[0], items[1:-1], items[-1]
        assert retrieved.query == "How many vacation days?" == answer.query
        assert [p.number for p in retrieved.passages] == [p.number for p in answer.passages] and retrieved.passages
        assert len(pieces) > 2 and all(isinstance(p, str) for p in pieces)
        assert answer.answer == "Every employee gets 27 days [1]." and answer.grounded
        assert 0 < answer.timings["first_token"] <= answer.timings["total"]


def test_chinese_question_gets_a_chinese_prompt_and_chinese_abstention(indexed):
    with ChatServer(reply="我不知道。") as server:
        engine = indexed(**{"answer.generator": "openai", "generate.openai_base_url": server.base_url,
                            "generate.openai_model": "tiny"})
        # Mostly Chinese, with the English words BM25 can find in this English corpus.
        answer = engine.ask("公司的员工每年有多少 vacation days？")
        assert answer.abstained and answer.answer == "我不知道。"
        system = server.requests[0]["body"]["messages"][0]["content"]
        assert "只根据给出的编号段落回答问题" in system
        # Nothing in the index matches at all: an honest "I don't know" without asking the model.
        before = len(server.requests)
        nothing = engine.ask("公司的创始人是谁？")
        assert nothing.abstained and nothing.answer == "我不知道。" and len(server.requests) == before


def test_unreachable_generator_is_a_clear_error(indexed):
    engine = indexed(**{"answer.generator": "openai", "generate.openai_base_url": "http://127.0.0.1:9/v1",
                        "generate.openai_model": "tiny", "generate.retries": 0})
    with pytest.raises(GeneratorError, match="cannot reach the generator at http://127.0.0.1:9/v1"):
        engine.ask("How many vacation days?")


def test_empty_and_overlong_questions(indexed):
    engine = indexed(**{"answer.max_question_chars": 40})
    with pytest.raises(RagError, match="empty"):
        engine.ask("   ", generator="extractive")
    answer = engine.ask("What does error code E-451 mean? " + "please " * 30, generator="extractive")
    assert answer.warnings and "cut to 40" in answer.warnings[0]
    assert len(answer.question) == 40


@pytest.mark.parametrize("mode", ["abstain", "warn"])
def test_an_answer_no_passage_supports_is_refused_or_flagged(indexed, mode):
    with ChatServer(reply="Acme was founded in 1987 by Ada Lovelace [1].") as server:
        engine = indexed(**{"answer.generator": "openai", "generate.openai_base_url": server.base_url,
                            "generate.openai_model": "tiny", "answer.verify": mode})
        answer = engine.ask("How many vacation days does an employee get?")
    assert any("answer.verify" in w for w in answer.warnings) and not answer.grounded
    if mode == "abstain":
        assert answer.abstained and answer.answer == "I don't know." and not answer.citations
    else:
        assert not answer.abstained and answer.answer.startswith("Acme was founded in 1987")


def test_a_supported_answer_without_its_marker_is_cited_to_the_passage_that_holds_it(indexed):
    with ChatServer(reply="27 days of paid vacation a year") as server:
        engine = indexed(**{"answer.generator": "openai", "generate.openai_base_url": server.base_url,
                            "generate.openai_model": "tiny", "answer.verify": "abstain"})
        answer = engine.ask("How many vacation days does an employee get?")
    (citation,) = answer.citations
    assert answer.grounded and answer.answer == f"27 days of paid vacation a year [{citation.number}]"
    assert citation.doc_id == "handbook.md"


@pytest.mark.parametrize("mode", ["abstain", "warn"])
def test_a_question_about_a_name_no_passage_mentions_is_not_answered_from_them(indexed, mode):
    """E-999 is in no document: the model is not asked ("abstain") or its answer is flagged."""
    with ChatServer(reply="the lidar sensor is blocked [1]") as server:
        engine = indexed(**{"answer.generator": "openai", "generate.openai_base_url": server.base_url,
                            "generate.openai_model": "tiny", "answer.verify": mode})
        answer = engine.ask("What does error code E-999 mean?")
        known = engine.ask("What does error code E-451 mean?")
    assert any("no passage mentions 'E-999'" in w for w in answer.warnings)
    assert sum("E-999" in w for w in answer.warnings) == 1, "said once, not again after generating"
    if mode == "abstain":
        assert answer.abstained and not answer.passages and len(server.requests) == 1, "only E-451 was asked"
    else:
        assert not answer.abstained and answer.answer.startswith("the lidar sensor") and len(server.requests) == 2
    assert not known.abstained and not any("mentions" in w for w in known.warnings)


def test_an_answer_from_a_passage_that_never_names_what_was_asked_about_is_refused(indexed):
    """The CFO is in the procurement policy, the 27 days in the handbook: the handbook's figure
    does not answer a question about the CFO."""
    with ChatServer(reply="27 days [1]") as server:
        engine = indexed(**{"answer.generator": "openai", "generate.openai_base_url": server.base_url,
                            "generate.openai_model": "tiny", "answer.verify": "abstain", "answer.k": 8})
        answer = engine.ask("How many vacation days does the CFO get?")
        everyone = engine.ask("How many vacation days does an employee get?")
    assert any("CFO" in p.text for p in answer.passages), "a passage names the CFO, so the model was asked"
    assert answer.abstained and any("does not mention 'CFO'" in w for w in answer.warnings)
    assert not everyone.abstained and everyone.citations[0].doc_id == "handbook.md"
