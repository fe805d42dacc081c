"""A study's units of work: a results file of finished units, and claims so that several drivers share the work.

Every finished unit is one JSON line of the results file, keyed by `(kind,
key)`; a unit already there is skipped, so a study runs in parts and resumes
where it stopped. Several driver processes (one per core) work through the
same units: each claims a unit before running it by creating
`<out>/claims/<kind>-<key>.pid` exclusively, and a claim whose process is
gone is taken over.
"""

import os

from tfvnas import files


class Units:
    """The results file and the claims of one study.

    Args:
        out_dir: the study's run folder (claims live in `<out_dir>/claims`).
        results: the results file (default `<out_dir>/results.jsonl`).
    """

    def __init__(self, out_dir, results=None):
        self.out_dir = os.fspath(out_dir)
        self.path = os.fspath(results) if results else os.path.join(self.out_dir, "results.jsonl")

    def read(self):
        return files.read_json_lines(self.path)

    def append(self, record):
        files.append_json_line(self.path, record)

    def done(self, kind, key):
        return any(r["kind"] == kind and r["key"] == key for r in self.read())

    def get(self, kind, key):
        """The finished unit's record, or None."""
        return next((r for r in self.read() if r["kind"] == kind and r["key"] == key), None)

    def of_kind(self, kind):
        return [r for r in self.read() if r["kind"] == kind]

    def claim_path(self, kind, key):
        """Where the claim of unit `kind`/`key` lives."""
        return os.path.join(self.out_dir, "claims", f"{kind}-{key}.pid")

    def take(self, kind, key):
        """Whether this process runs unit `kind`/`key`: not finished, and not being run by another live process."""
        if self.done(kind, key):
            return False
        path = self.claim_path(kind, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    if _claim_alive(path):
                        return False  # a live process runs it (or another user's)
                except ValueError:
                    pass
                os.remove(path)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(str(os.getpid()))
            if self.done(kind, key):  # it finished between the two checks
                os.remove(path)
                return False
            return True
        return False

    def running(self, *kinds):
        """Whether a live process holds a claim on a unit of one of `kinds`."""
        claims = os.path.dirname(self.claim_path("", ""))
        for name in os.listdir(claims) if os.path.isdir(claims) else ():
            if name.startswith(tuple(f"{kind}-" for kind in kinds)):
                try:
                    if _claim_alive(os.path.join(claims, name)):
                        return True
                except (OSError, ValueError):  # finished meanwhile, or half written
                    continue
        return False

    def finish(self, record):
        """Appends a finished unit's record and drops its claim."""
        self.append(record)
        path = self.claim_path(record["kind"], record["key"])
        if os.path.exists(path):
            os.remove(path)


def _claim_alive(path):
    """Whether the process a claim file names is alive (another user's process counts as alive).

    Raises ValueError if the file does not hold a process id.
    """
    with open(path, encoding="ascii") as f:
        pid = int(f.read().strip() or 0)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

