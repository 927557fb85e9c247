#!/usr/bin/env python3
"""Prints an HCL file (a Nomad job) as JSON, parsed by python-hcl2: strings without their
quotes, heredocs as their text, blocks as lists of objects keyed by their labels. Exits 1 with
the parser's message when the file is not valid HCL."""
import json
import sys

import hcl2


def clean(value):
    if isinstance(value, dict):
        return {
            clean(k): clean(v)
            for k, v in value.items()
            if k not in ("__is_block__", "__comments__")
        }
    if isinstance(value, list):
        return [clean(v) for v in value]
    if isinstance(value, str):
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            value = json.loads(value) if "\\" in value else value[1:-1]
        for marker in ("<<-", "<<"):
            if value.startswith(marker):
                tag, _, rest = value[len(marker):].partition("\n")
                body = rest.rsplit("\n", 1)[0] if rest.rstrip().endswith(tag) else rest
                lines = body.split("\n")
                if marker == "<<-":
                    indent = min((len(l) - len(l.lstrip()) for l in lines if l.strip()), default=0)
                    lines = [l[indent:] for l in lines]
                return "\n".join(lines) + "\n"
    return value


def main():
    try:
        with open(sys.argv[1]) as f:
            document = hcl2.load(f)
    except Exception as e:  # the parser's own error types vary by version
        print(f"{sys.argv[1]}: not valid HCL: {e}", file=sys.stderr)
        sys.exit(1)
    json.dump(clean(document), sys.stdout)


main()
