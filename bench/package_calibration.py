"""Copy the calibration measurements from bench/results into the package (launcher/estimate/calibration/).

    python3 bench/package_calibration.py          # copy + stamp manifest.json
    python3 bench/package_calibration.py --check  # exit 1 if the packaged copy differs (what the test runs)

bench/results keeps the raw measurements; the wheel ships byte-equal copies so an installed
gpujob fits exactly what the checkout fits. manifest.json records each file's sha256 (null: not measured yet) and
``fitted_at``, the time the copy was taken (kept when nothing changed, so a re-run is a no-op).
Prints one JSON object: {"changed": [...], "fitted_at": ...}.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from launcher.estimate.calibration import DATA_FILES, MANIFEST  # noqa: E402

SOURCE = ROOT / "bench" / "results"
TARGET = ROOT / "launcher" / "estimate" / "calibration"


def sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def drift() -> list[str]:
    """Files whose packaged copy (or manifest entry) differs from bench/results."""
    manifest = json.loads((TARGET / MANIFEST).read_text()) if (TARGET / MANIFEST).is_file() else {}
    recorded = manifest.get("files", {})
    return [n for n in DATA_FILES if not sha256(SOURCE / n) == sha256(TARGET / n) == recorded.get(n, "missing")]


def main(argv: list[str]) -> int:
    changed = drift()
    if "--check" in argv:
        print(json.dumps({"changed": changed}))
        return 1 if changed else 0
    manifest_path = TARGET / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    if changed or not manifest.get("fitted_at"):
        TARGET.mkdir(parents=True, exist_ok=True)
        for name in DATA_FILES:  # a file bench/results lacks is absent from the package too
            if (SOURCE / name).is_file():
                shutil.copyfile(SOURCE / name, TARGET / name)
            else:
                (TARGET / name).unlink(missing_ok=True)
        manifest = {"fitted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "files": {n: sha256(TARGET / n) for n in DATA_FILES}}
        manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(json.dumps({"changed": changed, "fitted_at": manifest["fitted_at"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
