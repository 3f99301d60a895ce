"""Drop settings from the suite's base ini so that an older or partial pooler
can start at all.  usage: ini_adjust.py INI KEY[,KEY...]

A KEY ("key" or "section.key", e.g. "users.pool_size") is removed both as a `key=value` word on [databases]/[users] lines and
as a `key = value` line in any section.  Only used when YARDSTICK_INI_DROP is
set; the dropped keys are printed so the run records what was changed.
"""

import re
import sys


def main(path, keys):
    keys = [k for k in keys.split(",") if k]
    out = []
    section = ""

    def dropped(key):
        return key in keys or f"{section}.{key}" in keys

    for line in open(path).read().splitlines():
        stripped = line.strip()
        sm = re.match(r"^\[(\w+)\]", stripped)
        if sm:
            section = sm.group(1)
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$", stripped)
        if m and dropped(m.group(1)):
            print(f"ini_adjust: dropped line: {stripped}", file=sys.stderr)
            continue
        if m and "=" in m.group(2):
            words = m.group(2).split()
            kept = [w for w in words if not dropped(w.split("=", 1)[0])]
            if kept != words:
                print(f"ini_adjust: {m.group(1)}: dropped {' '.join(w for w in words if w not in kept)}", file=sys.stderr)
                line = f"{m.group(1)} = {' '.join(kept)}"
        out.append(line)
    open(path, "w").write("\n".join(out) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
