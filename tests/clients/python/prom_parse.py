"""Parses a Prometheus text exposition (the file argv[1]) with prometheus_client's own parser, for
tests/it/metrics.rs, and prints what it read, one line each:
  TYPE <family> <type>
  SAMPLE <name>{<label>="<value>",...} <value>      (labels sorted by name)
Exits non-zero, saying why, when the parser refuses the text, or a family has no HELP or TYPE, a series
appears twice, or a histogram's buckets decrease or disagree with its _count.
"""

import sys

from prometheus_client.parser import text_string_to_metric_families


def fail(why):
    print(f"invalid exposition: {why}", file=sys.stderr)
    sys.exit(1)


def key(name, labels):
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def check_histogram(family):
    by_series = {}
    for s in family.samples:
        labels = {k: v for k, v in s.labels.items() if k != "le"}
        series = by_series.setdefault(key("", labels), {"buckets": [], "count": None})
        if s.name.endswith("_bucket"):
            series["buckets"].append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_count"):
            series["count"] = s.value
    for labels, series in by_series.items():
        buckets = sorted(series["buckets"])
        if not buckets or buckets[-1][0] != float("inf"):
            fail(f"{family.name}{labels}: no +Inf bucket")
        if any(a[1] > b[1] for a, b in zip(buckets, buckets[1:])):
            fail(f"{family.name}{labels}: buckets decrease")
        if series["count"] != buckets[-1][1]:
            fail(f"{family.name}{labels}: _count {series['count']} != +Inf {buckets[-1][1]}")


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        text = f.read()
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser's own refusal, whatever its class
        fail(f"{type(e).__name__}: {e}")
    seen_families = set()
    seen_series = set()
    for family in families:
        if family.name in seen_families:
            fail(f"family {family.name} appears twice")
        seen_families.add(family.name)
        if family.type == "unknown":
            fail(f"family {family.name} has no TYPE")
        if not family.documentation:
            fail(f"family {family.name} has no HELP")
        print(f"TYPE {family.name} {family.type}")
        for s in family.samples:
            k = key(s.name, s.labels)
            if k in seen_series:
                fail(f"series {k} appears twice")
            seen_series.add(k)
            print(f"SAMPLE {k} {s.value!r}")
        if family.type == "histogram":
            check_histogram(family)


main()
