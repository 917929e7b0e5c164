"""Print the pytest node ids named in docs/audit.md, one per line (used by `make audit`)."""

import re
import sys
from pathlib import Path

AUDIT = Path(__file__).resolve().parent.parent / "docs" / "audit.md"
NODE = re.compile(r"`(tests/[\w/]+\.py(?:::[\w\[\]-]+)+)`")


def main() -> int:
    nodes = list(dict.fromkeys(NODE.findall(AUDIT.read_text())))
    if not nodes:
        print("docs/audit.md names no tests", file=sys.stderr)
        return 1
    print("\n".join(nodes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
