"""Writes the bundled price snapshot: ``python -m launcher.catalog.bundle AWS_VMS_CSV GCP_VMS_CSV [OUT]``.

Parsing is ``build``'s, writing is ``store``'s; this module only joins them for the bundle.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from launcher.catalog.build import build_offers
from launcher.catalog.store import bundled_path, write_snapshot

# Where the bundled snapshot comes from (see ../shared/data/skypilot-catalog-v8/README.md).
BUNDLED_SOURCES = {
    "aws": {"repo": "skypilot-org/skypilot-catalog", "path": "catalogs/v8/aws/vms.csv",
            "commit": "00148f2af3672e2229b4f7bf8157d5a3f36e3c35",
            # The source README gives no date for this commit and the file carries none.
            "snapshot": None},
    "gcp": {"repo": "anycloud-sh/catalog", "path": "gcp/vms.csv",
            "commit": "62ff0a987e0c257a89235415d2877812fb1aaf29", "snapshot": "2026-05-20"},
}


def main(argv: list[str] | None = None) -> int:
    """python -m launcher.catalog.bundle AWS_VMS_CSV GCP_VMS_CSV [OUT] [--reference DIR]

    DIR holds azure/vms.csv, lambda/vms.csv and vast/vms.csv (reference rows, estimate only).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    ref_dir = None  # --reference DIR: azure/, lambda/, vast/ vms.csv (estimate-only rows)
    if "--reference" in args:
        i = args.index("--reference")
        if i + 1 >= len(args):
            sys.stderr.write(main.__doc__ + "\n")
            return 2
        ref_dir = Path(args[i + 1])
        del args[i:i + 2]
    if len(args) not in (2, 3):
        sys.stderr.write(main.__doc__ + "\n")
        return 2
    aws_text = Path(args[0]).read_text(encoding="utf-8")
    gcp_text = Path(args[1]).read_text(encoding="utf-8")
    out = Path(args[2]) if len(args) == 3 else bundled_path()
    offers = build_offers(aws_text, gcp_text)
    if ref_dir is not None:
        from launcher.catalog.reference import PROVIDERS, parse_reference

        for provider in PROVIDERS:
            offers += parse_reference(provider, (ref_dir / provider / "vms.csv").read_text(encoding="utf-8"))
        details = {k: dict(v) for k, v in BUNDLED_SOURCES.items()}
        for provider in PROVIDERS:  # reference rows (estimate only): ../shared/data/anycloud-catalog/README.md
            details[provider] = {"repo": "anycloud-sh/catalog", "path": f"{provider}/vms.csv",
                                 "commit": "62ff0a987e0c257a89235415d2877812fb1aaf29", "snapshot": "2026-05-20"}
    else:
        details = {k: dict(v) for k, v in BUNDLED_SOURCES.items()}
    details["built"] = dt.date.today().isoformat()
    details["note"] = "AWS snapshot date unknown; the catalog date is the GCP one"
    source = ("bundled: skypilot-org/skypilot-catalog catalogs/v8/aws/vms.csv@00148f2 + "
              "anycloud-sh/catalog gcp/vms.csv@62ff0a9"
              + (" + anycloud-sh/catalog {azure,lambda,vast}/vms.csv@62ff0a9 (estimate only)" if ref_dir else ""))
    write_snapshot(out, offers, source=source, snapshot=BUNDLED_SOURCES["gcp"]["snapshot"], details=details)
    sys.stdout.write(f"wrote {len(offers)} offers to {out} ({out.stat().st_size} bytes)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
