import pytest

from rag.citations import Passage, is_abstention, resolve_citations


def passages(n: int) -> list[Passage]:
    return [Passage(i, f"text {i}", f"doc-{i}", f"src/doc-{i}.md", f"Doc {i}", "", 1.0 - i / 10, (i,))
            for i in range(1, n + 1)]


@pytest.mark.parametrize(
    "text, cleaned, cited, grounded",
    [
        ("Lisbon gets 25 days [1].", "Lisbon gets 25 days [1].", [1], True),
        ("A [1]. B [2][1].", "A [1]. B [2][1].", [1, 2], True),
        ("A [1, 2].", "A [1][2].", [1, 2], True),
        ("A ［2］。", "A [2]。", [2], True),
        ("A [1]. B [7].", "A [1]. B.", [1], False),  # 7 was never in the prompt: removed
        ("A [0].", "A.", [], False),
        ("No citation at all.", "No citation at all.", [], False),
        ("It is called **CarePlus** [1].", "It is called CarePlus [1].", [1], True),  # no Markdown bold
        ("2 * 3 = 6 [1]", "2 * 3 = 6 [1]", [1], True),
        ("Call window.__init__ or __main__ [1]", "Call window.__init__ or __main__ [1]", [1], True),
    ],
)
def test_citations_are_checked_against_the_prompt(text, cleaned, cited, grounded):
    out, citations, is_grounded = resolve_citations(text, passages(3))
    assert out == cleaned
    assert [c.number for c in citations] == cited
    assert is_grounded is grounded
    for c in citations:
        assert c.doc_id == f"doc-{c.number}" and c.quote == f"text {c.number}"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("I don't know.", True),
        ("I don’t know [1]", True),
        ("i don't know", True),
        ("我不知道。", True),
        ("", True),
        ("I don't know the exact figure, but the policy grants 25 working days to every Lisbon employee [1].", False),
        ("25 working days [1]", False),
    ],
)
def test_abstentions_are_recognised(text, expected):
    assert is_abstention(text, ["I don't know.", "我不知道。"]) is expected
