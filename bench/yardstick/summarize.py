"""Print pass/fail/error/skip counts per test file from a pytest JUnit XML report."""

import sys
import xml.etree.ElementTree as ET
from collections import OrderedDict, defaultdict


def main(paths, failures_out=None):
    counts = OrderedDict()
    bad = []
    cases = []
    for path in paths:
        stem = path.rsplit("/", 1)[-1].removesuffix(".xml")
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError:
            continue
        cases += [(stem, case) for case in root.iter("testcase")]
    for stem, case in cases:
        classname = case.get("classname") or ""
        # classname is like "test.test_misc" (module path, no class); a
        # pytest internal error is reported under "pytest"
        parts = classname.split(".")
        fname = next((p for p in parts if p.startswith("test_")), stem)
        c = counts.setdefault(fname, defaultdict(int))
        kids = {k.tag for k in case}
        if "error" in kids:
            c["error"] += 1
            state = "error"
        elif "failure" in kids:
            c["fail"] += 1
            state = "fail"
        elif "skipped" in kids:
            c["skip"] += 1
            state = None
        else:
            c["pass"] += 1
            state = None
        if state:
            node = next(k for k in case if k.tag in ("error", "failure"))
            msg = (node.get("message") or "").replace("\n", " ")[:200]
            bad.append(f"{fname}::{case.get('name')}\t{state}\t{msg}")
    fmt = "{:<28}{:>6}{:>6}{:>6}{:>6}{:>7}"
    print(fmt.format("file", "pass", "fail", "error", "skip", "total"))
    tot = defaultdict(int)
    for fname in sorted(counts):
        c = counts[fname]
        n = sum(c.values())
        print(fmt.format(fname, c["pass"], c["fail"], c["error"], c["skip"], n))
        for k, v in c.items():
            tot[k] += v
    print(fmt.format("TOTAL", tot["pass"], tot["fail"], tot["error"], tot["skip"], sum(tot.values())))
    if failures_out:
        with open(failures_out, "w") as f:
            f.write("\n".join(bad) + "\n")


if __name__ == "__main__":
    args = sys.argv[1:]
    out = None
    if args[:1] == ["--failures"]:
        out, args = args[1], args[2:]
    main(args, out)
