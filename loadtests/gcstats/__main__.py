"""Print, per server process, its collections per generation (count, thread CPU total and
largest, ms) and the full collections' object counts; see `sitecustomize.py` here."""
import argparse
import glob
import json


def summary(path: str) -> str:
    with open(path) as fh:
        d = json.load(fh)
    lines = [f"{path}: {d['seconds']:.0f} s serving, {len(d['late_modules'])} modules imported "
             f"after the freeze {d['late_modules'][:5]}"]
    for gen in (0, 1, 2):
        cpu = [r[1] * 1000 for r in d["runs"] if r[0] == gen]
        if cpu:
            lines.append(f"  generation {gen}: {len(cpu)} collections, CPU {sum(cpu):.1f} ms in "
                         f"all, largest {max(cpu):.1f} ms")
    full = [f"{r[1] * 1000:.1f} ms/{r[3]} objects" for r in d["runs"] if r[0] == 2]
    if full:
        lines.append("  full collections (CPU/oldest generation): " + ", ".join(full))
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.gcstats", description=__doc__)
    p.add_argument("prefix", help="the TAILOR_GC_STATS prefix the servers wrote under: "
                                  "reads PREFIX.<pid>.json")
    prefix = p.parse_args(argv).prefix
    paths = sorted(glob.glob(f"{prefix}.*.json"))
    if not paths:
        p.exit(1, f"no {prefix}.*.json: no server wrote its collections under that prefix\n")
    for path in paths:
        print(summary(path))


if __name__ == "__main__":
    main()
