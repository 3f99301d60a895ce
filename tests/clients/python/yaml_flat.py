"""Reads YAML files (argv[1:]) with PyYAML's safe loader, for tests/it/sidecar.rs, and prints every scalar
as one line `<file index>.<document index><path>\t<value>`, where the path is `.key` for a mapping entry and
`[i]` for a list item (`0.0.services.pgwarden.ports[0]\t6432:6432`). Exits non-zero when a file does not
parse.
"""

import sys

import yaml


def walk(prefix, node):
    if isinstance(node, dict):
        for k, v in node.items():
            walk(f"{prefix}.{k}", v)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            walk(f"{prefix}[{i}]", v)
    else:
        value = "" if node is None else str(node)
        if "\n" in value or "\t" in value:
            value = value.replace("\t", "\\t").replace("\n", "\\n")
        print(f"{prefix}\t{value}")


def main():
    for i, path in enumerate(sys.argv[1:]):
        with open(path, encoding="utf-8") as f:
            for j, doc in enumerate(yaml.safe_load_all(f)):
                walk(f"{i}.{j}", doc)


main()
