"""Writes every query of the TraceQL parser corpus (tests/data/traceql/*.yaml) as one
libFuzzer seed file, named by its content hash so reruns add nothing twice."""

import hashlib
import pathlib
import sys

import yaml


def main(corpus_dir: str, out_dir: str) -> None:
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for path in sorted(pathlib.Path(corpus_dir).glob("*.yaml")):
        for case in yaml.safe_load(path.read_text()) or []:
            query = case["query"].encode()
            seed = out / hashlib.sha1(query).hexdigest()
            if not seed.exists():
                seed.write_bytes(query)
                written += 1
    print(f"seed corpus: {written} new queries in {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
