#!/usr/bin/env python3
"""The argv lists a smolvm wrapper sends (../shared/seeds/smolvm-wrapper-tests.txt), run
against the vial binary with only the program name changed: exit codes, the exec
(returncode, stdout, stderr) triple, and `machine ls --json` parsing as a list.

Usage: smolvm_argv_test.py VIAL_BINARY   (exit 77 = skipped: no python image built)
Standard library only. Uses a private VIAL_HOME whose images/ points at the built images."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

VIAL = ""
HOME = Path()


def real_home() -> Path:
    if os.environ.get("VIAL_IMAGES_HOME"):
        return Path(os.environ["VIAL_IMAGES_HOME"])
    if os.geteuid() == 0:
        return Path("/var/lib/vial")
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local/share")
    return Path(data) / "vial"


def run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    """Like the wrapper: subprocess.run with captured text output, argv[0] replaced by vial."""
    assert argv[0] == "smolvm"
    env = dict(os.environ, VIAL_HOME=str(HOME))
    return subprocess.run([VIAL] + argv[1:], capture_output=True, text=True, env=env, input=stdin,
                          timeout=600)


class SmolvmArgv(unittest.TestCase):
    def check_ok(self, argv: list[str]) -> subprocess.CompletedProcess:
        r = run(argv)
        self.assertEqual(r.returncode, 0, f"{argv}: {r.stderr}")
        return r

    def check_fails(self, argv: list[str]) -> None:
        r = run(argv)
        self.assertNotEqual(r.returncode, 0, argv)
        self.assertTrue(r.stderr.strip(), f"{argv}: no error message")
        self.assertEqual(r.stderr.count("\n"), 1, f"{argv}: more than one line: {r.stderr!r}")

    def ls(self) -> list:
        listing = json.loads(self.check_ok(["smolvm", "machine", "ls", "--json"]).stdout)
        self.assertIsInstance(listing, list)
        return listing

    def test_wrapper_session(self) -> None:
        stage = HOME / "stage"
        stage.mkdir()
        pack = stage / "agent.smolmachine"
        smolfile = stage / "smolfile.toml"
        smolfile.write_text('cpus = 1\nmemory = 384\nenv = ["FROM_SMOLFILE=yes"]\n')

        self.assertEqual(self.ls(), [])
        self.check_ok(["smolvm", "pack", "create", "--image", "python", "-o", str(pack)])
        self.check_ok(["smolvm", "machine", "create", "agent-xyz"])
        self.check_ok(["smolvm", "machine", "create", "--from", str(pack), "--smolfile", str(smolfile),
                       "agent-pack"])
        self.check_fails(["smolvm", "machine", "create", "agent-xyz"])
        listing = {m["name"]: m for m in self.ls()}
        self.assertEqual(set(listing), {"agent-xyz", "agent-pack"})
        for m in listing.values():
            self.assertEqual(m["state"], "created")
            for key in ("cpus", "memory_mib", "pid", "created_at", "image"):
                self.assertIn(key, m)
        self.assertEqual(listing["agent-pack"]["memory_mib"], 384)

        self.check_ok(["smolvm", "machine", "start", "--name", "agent-xyz"])
        self.assertEqual({m["name"]: m["state"] for m in self.ls()}["agent-xyz"], "running")

        r = run(["smolvm", "machine", "exec", "--name", "agent-xyz", "--", "echo", "hello"])
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "hello\n", ""))
        r = run(["smolvm", "machine", "exec", "--name", "agent-xyz", "-e", "FOO=bar", "-e", "BAZ=qux", "-w",
                 "/tmp", "--timeout", "30s", "--", "sh", "-c", "echo $FOO $BAZ; pwd"])
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "bar qux\n/tmp\n", ""))
        r = run(["smolvm", "machine", "exec", "--name", "agent-xyz", "--", "sh", "-c", "echo nope >&2; exit 42"])
        self.assertEqual((r.returncode, r.stdout, r.stderr), (42, "", "nope\n"))

        host_file = stage / "file.txt"
        host_file.write_text("copied in\n")
        self.check_ok(["smolvm", "machine", "cp", str(host_file), "agent-xyz:/home/sandbox/file.txt"])
        r = run(["smolvm", "machine", "exec", "--name", "agent-xyz", "--", "cat", "/home/sandbox/file.txt"])
        self.assertEqual((r.returncode, r.stdout), (0, "copied in\n"))
        self.check_ok(["smolvm", "machine", "cp", "agent-xyz:/home/sandbox/file.txt", str(stage / "back.txt")])
        self.assertEqual((stage / "back.txt").read_text(), "copied in\n")

        self.check_ok(["smolvm", "machine", "stop", "--name", "agent-xyz"])
        self.check_fails(["smolvm", "machine", "exec", "--name", "agent-xyz", "--", "true"])

        # The machine made from the pack boots too (one VM at a time).
        self.check_ok(["smolvm", "machine", "start", "--name", "agent-pack"])
        r = run(["smolvm", "machine", "exec", "--name", "agent-pack", "--", "sh", "-c", "echo $FROM_SMOLFILE"])
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "yes\n", ""))

        self.check_ok(["smolvm", "machine", "delete", "-f", "agent-pack"])  # -f: stops it first
        self.check_ok(["smolvm", "machine", "delete", "-f", "agent-xyz"])
        self.check_fails(["smolvm", "machine", "delete", "-f", "agent-xyz"])
        self.assertEqual(self.ls(), [])


def main() -> int:
    global VIAL, HOME
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    VIAL = sys.argv[1]
    images = real_home() / "images"
    if not (images / "python" / "rootfs.qcow2").is_file():
        print(f"skipped: the python image is not built in {images}", file=sys.stderr)
        return 77
    with tempfile.TemporaryDirectory(prefix="vial-smolvm-") as tmp:
        HOME = Path(tmp)
        (HOME / "images").symlink_to(images)
        if (real_home() / "accel.json").is_file():
            shutil.copy(real_home() / "accel.json", HOME / "accel.json")
        try:
            result = unittest.main(argv=[sys.argv[0], "-v"], exit=False).result
        finally:
            # Whatever failed, leave no machine running.
            listing = run(["smolvm", "machine", "ls", "--json"])
            for m in json.loads(listing.stdout or "[]"):
                run(["smolvm", "machine", "delete", "-f", m["name"]])
        return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
