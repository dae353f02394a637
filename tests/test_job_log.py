"""jobs.sqlite: an upload job whose server process died is reported failed, not running forever,
and uploads a stopping server never ran are recorded failed for the processes still polling."""

import subprocess
import sys
import time

from rag.serve.callers import OPEN
from rag.serve.job_log import JOBS_FILE, JobLog
from rag.serve.jobs import Job, UploadJobs
from rag.serve.spool import UploadSpool


def _job(job_id: str, state: str) -> dict:
    return {"id": job_id, "collection": "docs", "key_name": None, "files": ["a.md"], "state": state,
            "created": time.time(), "finished": None, "report": None, "error": None}


def test_a_job_whose_process_is_gone_reads_as_failed_and_stays_so(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / JOBS_FILE
    log = JobLog(path, keep=10)
    log.record("mine", _job("mine", "running"), None)
    # Another process recorded "theirs", then was killed mid-upload.
    other = JobLog(path, keep=10)
    other.record("theirs", _job("theirs", "running"), None)
    other._conn.execute("UPDATE jobs SET job = json_set(job, '$._owner.pid', ?) WHERE id = 'theirs'", (dead.pid,))
    other._conn.commit()
    other.close()

    assert log.find("mine")["state"] == "running", "this process is alive: its job runs on"
    found = log.find("theirs")
    assert found["state"] == "failed" and found["finished"] and f"pid {dead.pid}" in found["error"]
    assert "upload again" in found["error"] and "_owner" not in found
    Job(**found)  # the fields a Job is made of, nothing else
    # Written back: every process now reads the same failure, with the same time.
    again = JobLog(path, keep=10).find("theirs")
    assert again == found


def test_a_reused_pid_does_not_keep_a_dead_job_running(tmp_path):
    path = tmp_path / JOBS_FILE
    log = JobLog(path, keep=10)
    log.record("old", _job("old", "queued"), None)
    # Same pid as this live process, but a different start time: the process that owned it is gone.
    log._conn.execute("UPDATE jobs SET job = json_set(job, '$._owner.started', -1) WHERE id = 'old'")
    log._conn.commit()
    assert log.find("old")["state"] == "failed"


def test_uploads_a_stopping_server_never_ran_are_recorded_failed(make_engine, tmp_path):
    engine = make_engine(**{"index.path": str(tmp_path / "index")})
    (tmp_path / "seed").mkdir()
    (tmp_path / "seed" / "seed.md").write_text("# Seed\n\nThe first document.\n")
    engine.index([tmp_path / "seed"])
    jobs = UploadJobs(engine, max_waiting=10, spool=UploadSpool(tmp_path / "spool", 2**30))
    folders = [jobs.new_folder() for _ in range(3)]
    for n, folder in enumerate(folders):
        (folder / f"note-{n}.md").write_text(f"# Note {n}\n\nText {n}.\n")
    live = engine.info().manifest
    # Another process's write holds the index: the first upload waits for it, the others queue.
    with engine.store.open_writer(live["embedding"], live["chunking"]):
        submitted = [jobs.submit_files(folder, "docs", OPEN) for folder in folders]
        deadline = time.monotonic() + 30
        while jobs.get(submitted[0].id).state != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        jobs.close()
    reader = JobLog(tmp_path / "index" / JOBS_FILE, keep=10)
    states = [reader.find(job.id) for job in submitted]
    assert states[0]["state"] == "failed" and "server stopped while another process" in states[0]["error"]
    for queued in states[1:]:
        assert queued["state"] == "failed" and "server stopped before indexing" in queued["error"]
    assert [d.doc_id for d in engine.documents().documents] == ["seed.md"]
