"""The documents a key may see: list, get, delete (one or by filter), upload; upload jobs.

Every read and delete adds the key's filters to the request's, so a key limited to HR neither
lists, reads nor deletes anything else; a document it may not see answers 404, as if absent.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import ValidationError

from rag.config import IngestSettings
from rag.errors import RagError
from rag.filters import document_matches, parse_filters
from rag.ingest.loaders import supported_extensions
from rag.records import DocumentDetail, DocumentPage, Facets
from rag.serve.callers import Caller, granted_acl
from rag.serve.deps import ReadCaller, ServiceDep, WriteCaller
from rag.serve.errors import Busy
from rag.serve.jobs import Job, safe_upload_name
from rag.serve.schemas import ERROR_RESPONSES, Deleted, DeletedDocument, DeletedMatching, JobStatus, RecordsUpload
from rag.serve.service import Service
from rag.serve.spool import SpoolFull

Filters = Annotated[list[str], Query(alias="filter", max_length=32,
                                     description="`rag search --filter` expressions, e.g. source=hr/*")]
_MAX_FILES = 1000
# Past any index's document count, and well inside SQLite's 64-bit integers (an offset past 2^63
# failed inside SQLite).
MAX_OFFSET = 2**31 - 1


router = APIRouter(prefix="/v1", tags=["documents"], responses=ERROR_RESPONSES)


@router.get("/documents")
def list_documents(service: ServiceDep, caller: ReadCaller, filters: Filters = [],  # noqa: B006
                   offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> DocumentPage:
    """One page of the documents the caller may see, in collection and id order, with `total`."""
    return service.engine.documents(caller.filters(filters), offset, limit, access=caller.person)


@router.get("/documents/{doc_id:path}")
def get_document(doc_id: str, service: ServiceDep, caller: ReadCaller,
                 collection: str | None = None) -> DocumentDetail:
    """A document's metadata and its chunks in order (`collection` when the id is in several)."""
    return _one(service, doc_id, collection, caller)


@router.delete("/documents/{doc_id:path}")
async def delete_document(doc_id: str, service: ServiceDep, caller: WriteCaller,
                          collection: str | None = None) -> Deleted:
    """Remove one document (in a new index version; queries keep being answered meanwhile)."""
    found = await asyncio.to_thread(_one, service, doc_id, collection, caller)
    # By its exact id and collection, never as filter text (`1` must not delete `001`), and
    # only if the caller may still see it when the write holds the lock.
    deleted, _ = await service.write(lambda: service.engine.delete([found.doc_id], found.collection,
                                                                   caller.filters(), access=caller.person))
    return Deleted(deleted=[DeletedDocument(collection=found.collection, doc_id=d) for d in deleted])


@router.delete("/documents")
async def delete_documents(service: ServiceDep, caller: WriteCaller,
                           filters: Filters = []) -> DeletedMatching:  # noqa: B006
    """Remove every document the caller may see that matches all the filters (at least one)."""
    if not filters:
        raise HTTPException(422, "give at least one ?filter=EXPR: deleting without one would delete "
                                 "everything the key may see")
    deleted = await service.write(lambda: service.engine.delete_matching(caller.filters(filters),
                                                                          access=caller.person))
    return DeletedMatching(deleted=[DeletedDocument(collection=c, doc_id=d) for c, d in deleted], count=len(deleted))


@router.post("/documents", status_code=202,
             openapi_extra={"requestBody": {"content": {
                 "multipart/form-data": {"schema": {"type": "object", "properties": {
                     "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                     "collection": {"type": "string"}}, "required": ["files"]}},
                 "application/json": {"schema": RecordsUpload.model_json_schema()}}}})
async def upload(request: Request, response: Response, service: ServiceDep, caller: WriteCaller) -> JobStatus:
    """Files (multipart `files`, with an optional `collection` field) or a JSON list of records,
    indexed in the background into `collection` (serve.upload_collection by default). Answered
    202 with the job; GET /v1/jobs/{id} tells how it went."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        job = await _upload_files(service, request, caller)
    elif kind == "application/json":
        job = await _upload_records(service, request, caller)
    else:
        raise HTTPException(415, f"send multipart/form-data files or an application/json list of records, "
                                 f"not {kind or 'a body without Content-Type'}")
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobStatus.of(job)


@router.get("/jobs")
def list_jobs(service: ServiceDep, caller: WriteCaller) -> list[JobStatus]:
    """The latest jobs the caller may see: its own uploads; for an admin key every upload and
    every scheduled run of a source."""
    return [JobStatus.of(job) for job in service.jobs.recent() if _may_see(job, caller)]


@router.get("/jobs/{job_id}")
def get_job(job_id: str, service: ServiceDep, caller: WriteCaller) -> JobStatus:
    """An upload job: state (queued, running, done, failed), counts and per-file problems.
    Only the key (and person) that made it, or an admin key, sees it."""
    job = service.jobs.get(job_id)
    if job is None or not _may_see(job, caller):
        raise HTTPException(404, f"no upload job {job_id!r} (finished jobs are kept until the server restarts)")
    return JobStatus.of(job)


@router.get("/facets")
def facets(service: ServiceDep, caller: ReadCaller, filters: Filters = []) -> Facets:  # noqa: B006
    """What the documents the key may see are made of: `collections`, `formats` and top-level
    source `folders`, each {name, documents, filter} (the filter expression selecting it),
    and the `mtime` range {first, last} in epoch seconds; for filter controls that offer
    only what exists."""
    return service.engine.facets(caller.filters(filters), access=caller.person)


def _may_see(job: Job, caller: Caller) -> bool:
    """The key (and person) that made it, by the key's id (a later key reusing a revoked key's
    name is another key), or an admin key; everyone in open mode."""
    return (job.key_id is not None and job.key_id == caller.owner) or caller.allows("admin")


def _one(service: Service, doc_id: str, collection: str | None, caller: Caller) -> DocumentDetail:
    found = service.engine.document(doc_id, collection, caller.filters(), access=caller.person)
    if not found:
        raise HTTPException(404, f"no document {doc_id!r}" + (f" in collection {collection!r}" if collection else ""))
    if len(found) > 1:
        raise HTTPException(409, f"document id {doc_id!r} is in collections "
                                 f"{', '.join(d.collection for d in found)}; add ?collection=NAME")
    return found[0]


def _collection(service: Service, requested: str | None, caller: Caller) -> str:
    """The collection an upload goes to, checked like the setting; a key limited by filters may
    only upload into collections its `collection` filters allow, so it can never place a document
    where it could not see it."""
    collection = requested or service.settings.serve.upload_collection
    try:
        IngestSettings._collection_name(collection)
    except ValueError as exc:
        raise HTTPException(422, f"collection {collection!r}: {exc}") from None
    key = caller.key
    limits = parse_filters(key.filters) if key else []
    if limits:
        # The same matcher the key's reads go through, so it may upload exactly where it can read.
        if any(f.key != "collection" for f in limits) or not document_matches(limits, {"collection": collection}):
            raise HTTPException(403, f"key {key.name!r} is limited to {' and '.join(key.filters)}; it may upload "
                                     "only into a collection its collection= filters name")
    return collection


async def _upload_files(service: Service, request: Request, caller: Caller) -> Job:
    declared = request.headers.get("content-length", "")
    # Refused before the body is read when the spool has no room for it.
    await asyncio.to_thread(service.jobs.spool.check_room, int(declared) if declared.isdigit() else 0)
    form = await request.form(max_files=_MAX_FILES, max_fields=16)
    allowed = set(supported_extensions())
    folder = service.jobs.new_folder()
    try:
        uploads = form.getlist("files")
        if not uploads or any(isinstance(u, str) for u in uploads):
            raise HTTPException(422, "send the documents as file parts named `files`")
        unexpected = set(form.keys()) - {"files", "collection", "acl"}
        if unexpected:
            raise HTTPException(422, f"unknown form fields: {', '.join(sorted(unexpected))} "
                                     "(expected `files` and optionally `collection` and `acl`)")
        collection = form.get("collection")
        target_collection = _collection(service, collection if isinstance(collection, str) else None, caller)
        acl = _form_acl(form.get("acl"), caller)
        for upload in uploads:
            name = safe_upload_name(upload.filename or "")
            suffix = Path(name).suffix.lower()
            if not name or not Path(name).stem:
                raise HTTPException(422, f"upload name {upload.filename!r} is empty once made safe; name the file")
            if suffix not in allowed:
                raise HTTPException(415, f"{name}: unsupported file type {suffix or '(none)'}; "
                                         f"supported: {', '.join(sorted(allowed))}")
            target = folder / name
            if target.exists():
                raise HTTPException(422, f"two uploaded files are named {name}; names must be unique in one upload")
            await asyncio.to_thread(service.jobs.spool.copy_in, upload.file, target)
        names = sorted(p.name for p in folder.iterdir())
        await asyncio.to_thread(_refuse_unseen, service, target_collection, names, caller)
        return service.jobs.submit_files(folder, target_collection, caller, acl)
    except RagError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        if isinstance(exc, SpoolFull):
            raise
        raise Busy(str(exc), retry_after=10) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        await form.close()


async def _upload_records(service: Service, request: Request, caller: Caller) -> Job:
    try:
        body = RecordsUpload.model_validate_json(await request.body())
    except ValidationError as exc:
        raise HTTPException(422, [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()[:20]]) from None
    ingest = service.settings.ingest
    collection = _collection(service, body.collection, caller)
    await asyncio.to_thread(_refuse_unseen, service, collection, [r.id for r in body.records], caller)
    acls = [_granted(record.metadata.get("acl"), caller, f"record {i + 1} ({record.id!r}) acl")
            for i, record in enumerate(body.records)]
    await asyncio.to_thread(service.jobs.spool.check_room, len(await request.body()))
    folder = service.jobs.new_folder()
    try:
        records = folder / "records.jsonl"
        with records.open("w", encoding="utf-8") as out:
            for record, acl in zip(body.records, acls):
                metadata = {k: v for k, v in record.metadata.items() if k != "acl"}
                line = {ingest.json_id_field: record.id, ingest.json_text_field: record.text, "metadata": metadata}
                if acl is not None:
                    line["acl"] = acl
                if record.title is not None:
                    line[ingest.json_title_field] = record.title
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
        return service.jobs.submit_records(folder, records, len(body.records), collection, caller)
    except RagError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise Busy(str(exc), retry_after=10) from None


def _granted(requested: object, caller: Caller, where: str) -> str | dict[str, list[str]] | None:
    try:
        return granted_acl(requested, caller, where)
    except ValueError as exc:
        raise HTTPException(403, str(exc)) from None


def _form_acl(value: object, caller: Caller) -> str | dict[str, list[str]] | None:
    """The `acl` form field (JSON: "public" or {"users", "groups"}) for every uploaded file."""
    if value is None:
        return _granted(None, caller, "acl")
    try:
        requested = json.loads(value) if isinstance(value, str) else None
    except ValueError:
        requested = None
    if requested is None:
        raise HTTPException(422, 'the `acl` field must be JSON: "public" or {"users": [...], "groups": [...]}')
    return _granted(requested, caller, "acl")


def _refuse_unseen(service: Service, collection: str, doc_ids: list[str], caller: Caller) -> None:
    """An upload replaces the document of its id: a caller limited by filters or to a person must
    not replace (or plant a new version of) one it may not see."""
    if not (caller.person or caller.filters()) or not service.engine.store.exists():
        return
    for doc_id in doc_ids:
        held = service.engine.document(doc_id, collection)
        if held and not service.engine.document(doc_id, collection, caller.filters(), access=caller.person):
            raise HTTPException(403, f"the id {doc_id!r} cannot be used by this caller in collection "
                                     f"{collection!r}; upload it under another id")
