"""Access lists for folders: a `.ragacl` file says who may read the documents of its folder and,
inherited, of its subfolders, so that an operator restricts a whole tree without touching a file.

Format (strict). A `.ragacl` holds exactly one JSON value, in UTF-8, the same value a JSON Lines
record's `acl` takes:

    "public"

or an object listing who may read, either key optional:

    {"users": ["ana@acme.example", "rui"], "groups": ["hr", "board"]}

Names are non-empty strings, compared exactly (case counts), at most 10,000 per list; duplicates
and order do not matter. `{}` or empty lists mean nobody (only the operator, who asks with no
person). Anything else is an error: another string ("private", "everyone"), a list, other keys
("roles", "user"), a key given twice, a name that is not a string, text that is not JSON or not
UTF-8, an empty file, a file over 2 MiB, a `.ragacl` that cannot be read or is not a file.

Which list a document gets:
- nearest wins, with no merging: the `.ragacl` in the document's own folder, else the one in the
  nearest folder above it, folders above the one named to `rag index` included (indexing
  `docs/hr` alone keeps the list `docs/.ragacl` gives it); a nearer file replaces a farther one
  entirely, it never adds to it. Folders are those of the path as found: a linked folder's own
  `.ragacl` counts, then the folders above the link;
- with no `.ragacl` on the way up, the document has no list: its collection's default decides
  (`[access]`), as for a record without `acl`;
- a JSON or JSON Lines record's own `acl` is nearer than its file's folder, so it wins;
- an e-mail's attachments (documents with `metadata.parent`) get their file's list. Zip archives
  are not read as folders (only as .docx, .pptx and .xlsx files, each one document), so no
  member has a list of its own.

Fail closed. A malformed `.ragacl` is one failed line in the run's report naming the file and
what to write instead, and the run exits 1; the files whose nearest `.ragacl` it is are not
indexed in that run (new ones stay out of the index, so they are readable by nobody), and what
the index already holds from them stays exactly as it was, their access lists included
(`--sync` deletes none of it). Fix the file and run again.

A `.ragacl` is never indexed as a document: hidden files never are, and naming one is refused.
Files uploaded through `rag serve` take no list from any `.ragacl` (the request gives it).
Changing a `.ragacl` takes effect at the next `rag index` of its folder: the documents' rows are
rewritten with the new list, and nothing is chunked or embedded again (decision `acl_changed`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import IngestError
from rag.ingest.acl import access_list
from rag.ingest.discover import SourceFile
from rag.records import Acl

ACL_FILE = ".ragacl"
_MOST_BYTES = 2 << 20
_FORMAT = 'a .ragacl holds "public" or {"users": [...], "groups": [...]} in JSON'


def read_acl_file(path: Path) -> Acl:
    """The access list a `.ragacl` gives, canonical; IngestError saying what is wrong otherwise."""
    try:
        if not path.is_file():
            raise IngestError(f"not a file; {_FORMAT}")
        if path.stat().st_size > _MOST_BYTES:
            raise IngestError(f"{path.stat().st_size:,} bytes, over 2 MiB; list groups rather than people")
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(f"cannot read it ({exc.strerror or exc}); make it readable to this user") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(f"not UTF-8 text (byte {exc.start + 1}); {_FORMAT}") from None
    if not text.strip():
        raise IngestError(f"empty; {_FORMAT} (\"public\" to open the folder to everyone)")
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise IngestError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); {_FORMAT}") from None
    except RecursionError:
        raise IngestError(f"nested too deeply; {_FORMAT}") from None
    try:
        return access_list(value)
    except IngestError as exc:
        # access_list names a record's field ("acl.users"); here the file is the list.
        reason = exc.reason.replace('"acl.', '"').replace('"acl"', "the value")
        raise IngestError(f"{reason}; {_FORMAT}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are each given once: a second "users" must not silently replace the first."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise IngestError(f"the key {key!r} is given twice; give each key once. {_FORMAT}")
        seen.add(key)
    return dict(pairs)


@dataclass(frozen=True)
class FolderAcl:
    """The list governing one folder's files: from `file`, or none (`file` None); `error` when
    that file cannot be used."""

    acl: Acl | None = None
    file: Path | None = None
    error: str | None = None


@dataclass
class Governed:
    """A run's files with the list each gets, and those a malformed `.ragacl` holds back."""

    files: list[SourceFile] = field(default_factory=list)
    acls: list[Acl | None] = field(default_factory=list)
    # The malformed `.ragacl`, why, and the files whose nearest `.ragacl` it is.
    held: dict[Path, tuple[str, list[SourceFile]]] = field(default_factory=dict)
    # (path, reason): `.ragacl` files named as if they were documents.
    refused: list[tuple[str, str]] = field(default_factory=list)


class FolderAccess:
    """Finds the nearest `.ragacl` of each folder, reading each folder (and file) once per run."""

    def __init__(self) -> None:
        self._folders: dict[Path, FolderAcl] = {}

    def of(self, path: Path) -> FolderAcl:
        """The list governing the file at `path` (its folder's, or the nearest above)."""
        return self.folder(Path(os.path.abspath(path)).parent)

    def folder(self, folder: Path) -> FolderAcl:
        """The list an absolute folder's files get; every folder looked at on the way up is
        remembered, so a run reads each `.ragacl` once however many files it governs."""
        walked: list[Path] = []
        found = FolderAcl()
        for current in (folder, *folder.parents):
            if current in self._folders:
                found = self._folders[current]
                break
            walked.append(current)
            candidate = current / ACL_FILE
            if os.path.lexists(candidate):  # a broken link, or a folder of that name, is an error too
                found = _read(candidate)
                break
        for current in walked:
            self._folders[current] = found
        return found


def _read(path: Path) -> FolderAcl:
    try:
        return FolderAcl(read_acl_file(path), path)
    except IngestError as exc:
        return FolderAcl(None, path, exc.reason)


def govern(files: list[SourceFile], access: FolderAccess | None = None) -> Governed:
    """Each file with the list its folders give it; a malformed `.ragacl`'s files held back."""
    access = access or FolderAccess()
    governed = Governed()
    for src in files:
        if src.path.name == ACL_FILE:
            governed.refused.append((str(src.path), "an access list file (.ragacl) is never indexed as a document; "
                                     "name its folder to index the documents it governs"))
            continue
        found = access.of(src.path)
        if found.error is not None:
            governed.held.setdefault(found.file, (found.error, []))[1].append(src)  # type: ignore[index]
            continue
        governed.files.append(src)
        governed.acls.append(found.acl)
    return governed


def held_reason(error: str, files: list[SourceFile]) -> str:
    """What the report says of a malformed `.ragacl`: what is wrong, and what it cost."""
    some = f"{files[0].rel}{', ...' if len(files) > 1 else ''}"
    counted = f"the file it governs ({some}) was" if len(files) == 1 else \
        f"the {len(files)} files it governs ({some}) were"
    return (f"{error}. Until it is fixed, {counted} not indexed, and what the index holds from them is kept as it "
            "was (--sync deletes none of it); fix the file and run again")
