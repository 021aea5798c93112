"""CI: the locked dependencies against the known vulnerabilities, saying plainly what could be audited.

    python .ci/audit.py requirements.lock torch==2.13.0     # (`make audit` runs this)

1. pip-audit, with its default service: PyPI's per-release JSON API (``/pypi/<name>/<version>/json``), for every
   ``name==version`` the lock pins plus the extra pins given (torch: the Makefile pins it, the lock leaves it out).
2. pip-audit reports a package whose release page does not answer as "not found on PyPI", skips it, and still
   prints "No known vulnerabilities found". Such a package is not called clean here: PyPI's project page
   (``/pypi/<name>/json``), which lists the known vulnerabilities of the project's *latest* release, audits it
   when the lock pins that latest release; a package pinned below its latest release is listed as not audited
   (``make lock LOCK_FLAGS=--upgrade`` moves the lock to the latest releases that Python 3.11 and the other
   pins allow).

Exit status 1 when a known vulnerability affects a pinned version and is not in ``IGNORED`` (each with the
reason it is accepted); 0 otherwise, with every package that could not be audited named, and a notice when no
vulnerability service answered at all. The standard library only, besides pip-audit itself.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: Vulnerabilities accepted, by id (PYSEC-…, GHSA-…, CVE-…), each with why: no fixed release, or not reachable
#: from Vitrine's use of the package. Empty: none is accepted.
IGNORED: dict[str, str] = {}

PROJECT_PAGE = "https://pypi.org/pypi/{name}/json"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: Path, extra: list[str]) -> dict[str, str]:
    """``{canonical name: version}`` of every pin in the lock file and the extra ``name==version`` arguments."""
    found = {}
    for line in [*lock.read_text().splitlines(), *extra]:
        match = PIN.match(line.strip())
        if match:
            found[canonical(match.group(1))] = match.group(2)
    if not found:
        raise SystemExit(f"{lock} pins no package (lines like name==version): is it a lock file?")
    return found


def pip_audit(pinned: dict[str, str]) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """pip-audit's verdict: ``({name: vulnerabilities}, {name: why it was skipped})``."""
    with tempfile.TemporaryDirectory() as tmp:
        requirements, report = Path(tmp) / "pins.txt", Path(tmp) / "audit.json"
        requirements.write_text("".join(f"{n}=={v}\n" for n, v in pinned.items()))
        ignore = [arg for vuln in IGNORED for arg in ("--ignore-vuln", vuln)]
        command = [sys.executable, "-m", "pip_audit", "-r", str(requirements), "--no-deps", "--disable-pip"]
        command += ["--progress-spinner", "off", "--format", "json", "--output", str(report), *ignore]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if not report.is_file():  # e.g. its service did not answer at all: every package is then unaudited
            last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
            return {}, {name: f"pip-audit failed (exit status {done.returncode}): {last}" for name in pinned}
        data = json.loads(report.read_text())
    audited, skipped = {}, {}
    for dep in data["dependencies"]:
        name = canonical(dep["name"])
        if "skip_reason" in dep:
            skipped[name] = dep["skip_reason"]
        else:
            audited[name] = dep.get("vulns", [])
    return audited, skipped


def project_page(name: str) -> dict | str:
    """PyPI's project JSON, or why it could not be read."""
    try:
        with urllib.request.urlopen(PROJECT_PAGE.format(name=name), timeout=60) as response:
            return json.load(response)
    except (urllib.error.URLError, TimeoutError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


def main(argv: list[str]) -> int:
    if not argv:
        raise SystemExit(__doc__)
    pinned = pins(Path(argv[0]), argv[1:])
    audited, skipped = pip_audit(pinned)
    found: dict[str, list[dict]] = {n: v for n, v in audited.items() if v}
    print(f"pip-audit (PyPI's per-release JSON API): {len(audited)} of {len(pinned)} pinned packages audited")
    if skipped:
        reasons = sorted({re.sub(r": \S+ \(.*\)$", "", why) for why in skipped.values()})
        print(f"  {len(skipped)} skipped by pip-audit: {'; '.join(reasons)}")
    not_audited: dict[str, str] = {}
    by_page = 0
    with ThreadPoolExecutor(8) as pool:
        pages = dict(zip(skipped, pool.map(project_page, skipped), strict=True))
    for name, page in sorted(pages.items()):
        if isinstance(page, str):
            not_audited[name] = f"project page unreadable ({page})"
            continue
        latest = page["info"]["version"]
        if latest != pinned[name]:
            not_audited[name] = f"pinned {pinned[name]}, latest {latest}"
            continue
        by_page += 1
        vulns = [v for v in page.get("vulnerabilities", []) if v.get("id") not in IGNORED]
        if vulns:
            found[name] = [{"id": v["id"], "fix_versions": v.get("fixed_in", [])} for v in vulns]
    if skipped:
        print(f"PyPI's project pages (the latest release's vulnerabilities): {by_page} more audited, pinned at their")
        print("  latest release")
    if not_audited:
        print(f"NOT AUDITED ({len(not_audited)} packages): their vulnerabilities are unknown, not absent")
        for name, why in sorted(not_audited.items()):
            print(f"  {name}: {why}")
    if len(not_audited) == len(pinned):
        print("NOTICE: no vulnerability service answered from this machine: nothing was audited")
    for vuln, why in sorted(IGNORED.items()):
        print(f"ignored {vuln}: {why}")
    if found:
        print("KNOWN VULNERABILITIES in pinned versions:")
        for name, vulns in sorted(found.items()):
            for v in vulns:
                fixes = ", ".join(v.get("fix_versions") or []) or "no fixed release"
                print(f"  {name} {pinned[name]}: {v['id']} (fixed in: {fixes})")
        print("Upgrade the package in the lock (make lock LOCK_FLAGS='--upgrade-package NAME'), or, with no fix, add")
        print("the id to IGNORED in .ci/audit.py with the reason it cannot reach Vitrine.")
        return 1
    audited_count = len(pinned) - len(not_audited)
    print(f"No known vulnerability in the {audited_count} audited packages ({len(not_audited)} not audited).")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
