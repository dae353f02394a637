"""The GGUF chat model through OpenVINO GenAI (generate.local_runtime = "openvino", the default
for a GGUF chat model on the CPU): the default Qwen2.5-Coder-1.5B-Instruct, really generating."""

import shutil
from pathlib import Path

import pytest

from rag.config import Settings
from rag.generate.base import GeneratorError
from rag.generate.bundled import bundled_model
from rag.generate.factory import make_generator
from rag.generate.ovgenai import OpenVINOGenerator
from rag.generate.ovprepare import (FILES, RECORD, gguf_context_length, prepared_folder, prepared_model,
                                    read_record)
from rag.mapped_files import release_mapped_weights

from generator_prompts import prompt_for

pytestmark = pytest.mark.slow

MODEL = "qwen2.5-coder-1.5b-instruct"


@pytest.fixture(scope="module")
def qwen(tmp_path_factory) -> OpenVINOGenerator:
    settings = Settings.load(overrides={"generate.local_model": MODEL}, environ={})
    generator = make_generator(settings, embedder=None)  # type: ignore[arg-type]  # not read by local
    assert isinstance(generator, OpenVINOGenerator), "auto: a GGUF chat model on the CPU runs on OpenVINO"
    generator.warm_up()
    return generator


def test_a_chat_model_answers_from_its_passage_and_counts_tokens(qwen):
    assert qwen.style == "chat" and qwen.converses and qwen.context_tokens == 8192
    prompt = prompt_for(qwen, "Where is printer PRN-9?", [("it.md", "Printer PRN-9 is on floor 5.")])
    (out,) = qwen.generate([prompt], max_new_tokens=16)
    assert "floor 5" in out.text and "[1]" in out.text
    assert out.prompt_tokens > 100 and 0 < out.completion_tokens <= 16
    assert qwen.count_tokens("Printer PRN-9 is on floor 5.") < 16


def test_streaming_batching_and_a_second_question_agree_with_one_answer_at_a_time(qwen):
    passages = [("it.md", "Printer PRN-9 is on floor 5."), ("food.md", "The canteen opens at 11:30 every weekday.")]
    first = prompt_for(qwen, "When does the canteen open?", passages)
    second = prompt_for(qwen, "Where is printer PRN-9?", passages)
    (alone,) = qwen.generate([first], max_new_tokens=12)
    (other,) = qwen.generate([second], max_new_tokens=12)  # the system prompt's KV blocks are reused
    assert alone.text.endswith("[2]") and "floor 5 [1]" in other.text
    assert [g.text for g in qwen.generate([first, second], max_new_tokens=12)] == [alone.text, other.text]
    assert "".join(qwen.stream(first, max_new_tokens=12)).strip() == alone.text
    assert qwen.generate([first], max_new_tokens=12)[0].text == alone.text, "greedy: the same answer again"


def test_prompt_lookup_gives_the_answer_plain_decoding_gives(qwen):
    text = ("Error code E-404 means the fleet server connection was lost because there was no Wi-Fi for more "
            "than 120 seconds; the robot finishes its current task and waits at the nearest charger.")
    prompt = prompt_for(qwen, "What does error code E-404 mean?", [("errors.md", text)])
    (looked_up,) = qwen.generate([prompt], max_new_tokens=40)
    plain = OpenVINOGenerator(MODEL, qwen.path, qwen._sha, qwen.name, qwen.cache_dir, prompt_lookup=0,
                              precision=qwen.precision)
    (without,) = plain.generate([prompt], max_new_tokens=40)
    assert "fleet server connection was lost" in looked_up.text
    assert looked_up.text == without.text


def test_a_deadline_stops_a_generation_and_says_so(qwen):
    prompt = prompt_for(qwen, "What does error code E-404 mean?", [("errors.md", "Error E-404: no Wi-Fi.")])
    for prompts in ([prompt], [prompt, prompt]):
        with pytest.raises(GeneratorError, match="stopped after"):
            qwen.generate(prompts, 48, timeout=0.01)
    assert qwen.generate([prompt], 8, timeout=600)[0].text, "in time, it answers"


def test_the_prepared_model_is_named_by_the_ggufs_sha256_and_checked_before_use(qwen, tmp_path: Path):
    folder = qwen.folder
    assert folder == prepared_folder(qwen.cache_dir, qwen.path, qwen._sha) and qwen._sha[:16] in folder.name
    record = read_record(folder, qwen._sha)
    # A verified folder is loaded without the GGUF (torch's de-quantization removes a bundled
    # one after use): it is joined again from its parts only to prepare the folder anew.
    assert bundled_model(MODEL).assemble(qwen.cache_dir) == qwen.path
    assert record is not None and record["context_length"] == gguf_context_length(qwen.path) == 32768
    assert record["eos_token_id"] >= 0 and record["stop_token_ids"]
    assert read_record(folder, "0" * 64) is None, "a folder prepared from another file is not this one's"
    # A copy whose weights were altered is refused by its record, and prepared again.
    copy = tmp_path / "openvino-genai" / folder.name
    shutil.copytree(folder, copy)
    with (copy / "openvino_model.bin").open("r+b") as fh:
        fh.seek(1_000_000)
        byte = fh.read(1)
        fh.seek(1_000_000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    assert read_record(copy, qwen._sha) is None
    (copy / "openvino_tokenizer.bin").unlink()
    assert read_record(copy, qwen._sha) is None, "a missing file fails the record too"
    again, record = prepared_model(qwen.path, qwen._sha, tmp_path)
    assert again == copy and sorted(record["files"]) == sorted(FILES)
    assert (again / RECORD).is_file() and not list(again.parent.glob(".prepare-*"))


def test_the_mapped_weights_are_handed_back_once_the_model_is_loaded(qwen):
    def mapped_kb() -> int:
        """Resident kB of this process's mappings of the prepared folder's files."""
        total, inside = 0, False
        for line in Path("/proc/self/smaps").read_text().splitlines():
            if "-" in line.split(" ", 1)[0] and len(line.split()) >= 5:
                inside = len(line.split()) == 6 and line.split()[5].startswith(str(qwen.folder.resolve()))
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1])
        return total

    prompt = prompt_for(qwen, "Where is printer PRN-9?", [("it.md", "Printer PRN-9 is on floor 5.")])
    assert qwen.generate([prompt], max_new_tokens=8)[0].text
    assert mapped_kb() < 64 * 1024, "the IR's pages no longer count in this process's memory, answering or not"
    assert release_mapped_weights(qwen.folder) > 1_000_000_000, "the weights are mapped, not copied"
    assert "floor 5" in qwen.generate([prompt], max_new_tokens=8)[0].text, "and the model still answers"


def test_runtime_choice_follows_the_model_and_the_settings(tmp_path: Path):
    from rag.generate.local import LocalGenerator

    def made(**overrides):
        return make_generator(Settings.load(overrides=overrides, environ={}), embedder=None)  # type: ignore[arg-type]

    # Span decoding needs a logits processor: torch. So does a model that is not a GGUF file,
    # and one with tensor types OpenVINO's reader lacks (the 0.5B's Q5_0).
    assert isinstance(made(**{"generate.local_model": "qwen2.5-coder-0.5b-instruct"}), LocalGenerator)
    assert isinstance(made(**{"generate.local_model": MODEL, "generate.local_decoding": "span"}), LocalGenerator)
    assert isinstance(made(**{"generate.local_model": MODEL, "generate.local_runtime": "torch"}), LocalGenerator)
    folder = tmp_path / "hf-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert isinstance(made(**{"generate.local_model": str(folder)}), LocalGenerator)
    with pytest.raises(GeneratorError, match="runs GGUF files"):
        made(**{"generate.local_model": str(folder), "generate.local_runtime": "openvino"})
