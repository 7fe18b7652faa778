#!/usr/bin/env python3
"""Cross-checks the guard's schema source against Kafka's own JSON message schemas.

The guard is generated from kafka-protocol's decoders (generate.py). This script reads Kafka's JSON
message schemas (`clients/src/main/resources/common/message/*.json` of apache/kafka; `//` comments
allowed) and, for every request or header schema found and every version both sides define, compares
the wire layout Kafka's schema gives (field order, wire type, compact or not, nested structs, tagged
fields by tag) with the layout the generated walkers follow. Any difference is printed and the script
exits non-zero. Nullability differences are reported separately: kafka-protocol types a field
`Option<_>` in every version when Kafka makes it nullable in some, so the walker is more lenient there.

Usage: python3 crates/protocol/gen/check_kafka_json.py KAFKA_MESSAGE_DIR [KAFKA_PROTOCOL_SRC_MESSAGES_DIR]
"""

import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import generate as g  # noqa: E402


def strip_comments(text):
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = g.skip_string(text, i)
            out.append(text[i:j])
            i = j
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def in_versions(spec, v):
    if spec is None or spec == "none":
        return False
    if spec.endswith("+"):
        return v >= int(spec[:-1])
    if "-" in spec:
        a, b = spec.split("-")
        return int(a) <= v <= int(b)
    return v == int(spec)


def version_range(spec):
    if spec.endswith("+"):
        return int(spec[:-1]), 10**4
    if "-" in spec:
        a, b = spec.split("-")
        return int(a), int(b)
    return int(spec), int(spec)


PRIM = {"int8": "int8", "int16": "int16", "uint16": "int16", "int32": "int32", "uint32": "int32",
        "int64": "int64", "float64": "int64", "bool": "int8", "uuid": "uuid"}


def json_plan(fields, v, flexible, common):
    """Wire layout of a JSON struct at version v: (regular tokens, {tag: token})."""
    regular, tagged = [], {}
    for f in fields:
        if not in_versions(f["versions"], v):
            continue
        fflex = flexible and f.get("flexibleVersions", "0+") != "none"
        tok = json_token(f, v, fflex, flexible, common)
        if "taggedVersions" in f and in_versions(f["taggedVersions"], v):
            tagged[f["tag"]] = tok
        else:
            regular.append(tok)
    return regular, (tagged if flexible else None)


def json_token(f, v, fflex, flexible, common):
    t = f["type"]
    nullable = in_versions(f.get("nullableVersions"), v)
    name = g.snake(f["name"])
    if t in PRIM:
        return (name, PRIM[t], None, None)
    if t == "string":
        return (name, "compact_string" if fflex else "string", nullable, None)
    if t in ("bytes", "records"):
        return (name, "compact_bytes" if fflex else "bytes", nullable, None)
    if t.startswith("[]"):
        elem = t[2:]
        kind = "compact_array" if fflex else "array"
        if elem in PRIM or elem in ("string", "bytes"):
            ek = PRIM.get(elem) or ({"string": "compact_string", "bytes": "compact_bytes"}[elem] if fflex else elem)
            return (name, kind, nullable, ek)
        sub = f.get("fields") or common[elem]
        return (name, kind, nullable, json_plan(sub, v, flexible, common))
    sub = f.get("fields") or common[t]
    return (name, "option_struct" if nullable else "struct", None, json_plan(sub, v, flexible, common))


def rust_cond(cond, v):
    expr = cond.replace("&&", " and ").replace("||", " or ").replace("!(", " not (").replace("true", "True").replace("false", "False")
    return eval(expr, {}, {"version": v})


def kp_leaf_token(ctx, structs, name, leaf, rust_type, v):
    nullable = rust_type.strip().startswith("Option<")
    fixed = {"types::Int8": "int8", "types::Boolean": "int8", "types::Int16": "int16", "types::UInt16": "int16",
             "types::Int32": "int32", "types::UInt32": "int32", "types::Int64": "int64", "types::Float64": "int64",
             "types::Uuid": "uuid"}
    var = {"types::String": "string", "types::CompactString": "compact_string", "types::Bytes": "bytes",
           "types::CompactBytes": "compact_bytes"}
    if leaf in fixed:
        return (name, fixed[leaf], None, None)
    if leaf in var:
        return (name, var[leaf], nullable, None)
    if leaf in (g.STRUCT, g.OPTION_STRUCT):
        t, _ = g.strip_generic(rust_type, "Option")
        return (name, "option_struct" if leaf == g.OPTION_STRUCT else "struct", None, kp_plan(ctx, structs, t, v))
    m = re.fullmatch(r"types::(Compact)?Array\((.*)\)", leaf)
    kind = "compact_array" if m.group(1) else "array"
    elem = m.group(2).strip()
    if elem == g.STRUCT:
        return (name, kind, nullable, kp_plan(ctx, structs, g.element_struct(rust_type), v))
    return (name, kind, nullable, fixed.get(elem) or var[elem])


def kp_eval(node, v):
    while node[0] == "if":
        node = node[2] if rust_cond(node[1], v) else node[3]
    return node


def kp_tag_eval(stmts, v):
    st = stmts[0]
    if st[0] == "if":
        return kp_tag_eval(st[2] if rust_cond(st[1], v) else st[3], v) if (st[2] if rust_cond(st[1], v) else st[3]) else None
    return st if st[0] == "assign" else None


def kp_plan(ctx, structs, name, v):
    s = structs[name]
    regular = []
    for field, node in s.fields:
        leaf = kp_eval(node, v)
        if leaf[0] == "leaf":
            regular.append(kp_leaf_token(ctx, structs, field, leaf[1], ctx.field_type(name, field), v))
    tagged = None
    if s.tagged and rust_cond(s.tagged[0], v):
        tagged = {}
        for tag, stmts in s.tagged[1]:
            st = kp_tag_eval(stmts, v)
            if st is not None:
                leaf = kp_eval(st[2], v)
                if leaf[0] == "leaf":
                    tagged[tag] = kp_leaf_token(ctx, structs, st[1], leaf[1], ctx.field_type(name, st[1]), v)
    return regular, tagged


def compare(a, b, path, out, lenient):
    """a: Kafka JSON plan, b: kafka-protocol plan."""
    (ra, ta), (rb, tb) = a, b
    if len(ra) != len(rb):
        out.append("%s: %d fields in Kafka's schema, %d in the walker (%s vs %s)" % (
            path, len(ra), len(rb), [t[0] for t in ra], [t[0] for t in rb]))
        return
    for x, y in zip(ra, rb):
        compare_token(x, y, path, out, lenient)
    if (ta is None) != (tb is None):
        out.append("%s: tagged-field section %s in Kafka's schema, %s in the walker" % (path, ta is not None, tb is not None))
    elif ta is not None:
        for tag in sorted(set(ta) | set(tb)):
            if tag not in tb:
                # A tag the walker does not know is skipped by its declared size: safe, reported as info.
                lenient.append("%s: tag %d (%s) skipped as unknown by the walker" % (path, tag, ta[tag][0]))
            elif tag not in ta:
                out.append("%s: tag %d known to the walker, not in Kafka's schema" % (path, tag))
            else:
                compare_token(ta[tag], tb[tag], "%s.tag%d" % (path, tag), out, lenient)


def compare_token(x, y, path, out, lenient):
    p = "%s.%s" % (path, x[0])
    if x[1] != y[1]:
        out.append("%s: %s in Kafka's schema, %s in the walker (field %s)" % (p, x[1], y[1], y[0]))
        return
    if x[2] is not None and y[2] is not None and x[2] != y[2]:
        (lenient if y[2] else out).append("%s: nullable %s in Kafka's schema, %s in the walker" % (p, x[2], y[2]))
    if isinstance(x[3], tuple):
        compare(x[3], y[3], p, out, lenient)
    elif x[3] != y[3]:
        out.append("%s: element %s in Kafka's schema, %s in the walker" % (p, x[3], y[3]))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    json_dir = sys.argv[1]
    src_dir = sys.argv[2] if len(sys.argv) > 2 else g.default_src_dir()
    problems, lenient, checked = [], [], []
    for fname in sorted(os.listdir(json_dir)):
        if not (fname.endswith("Request.json") or fname == "RequestHeader.json"):
            continue
        spec = json.loads(strip_comments(open(os.path.join(json_dir, fname)).read()))
        name = spec["name"]
        module = g.snake(name)
        path = os.path.join(src_dir, module + ".rs")
        if not os.path.exists(path):
            problems.append("%s: no kafka-protocol message %s" % (name, module))
            continue
        ctx, structs = g.parse_module(path)
        common = {c["name"]: c["fields"] for c in spec.get("commonStructs", [])}
        lo, hi = version_range(spec["validVersions"])
        versions = [v for v in range(lo, min(hi, 200) + 1)
                    if not rust_cond(structs[name].range_cond, v)]
        for v in versions:
            flexible = in_versions(spec.get("flexibleVersions", "none"), v)
            compare(json_plan(spec["fields"], v, flexible, common), kp_plan(ctx, structs, name, v),
                    "%s v%d" % (name, v), problems, lenient)
        checked.append("%s v%s" % (name, ",".join(map(str, versions)) if versions else "(no common version)"))
    for line in checked:
        print("checked", line)
    for line in lenient:
        print("lenient:", line)
    for line in problems:
        print("MISMATCH:", line)
    print("%d schemas, %d mismatches, %d lenient differences" % (len(checked), len(problems), len(lenient)))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
