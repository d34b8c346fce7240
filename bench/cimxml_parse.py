"""CPU of parsing a CIM-XML request body: pywbem's SAX tuple tree against ``cimxml.wire.tuple_tree``.

    python bench/cimxml_parse.py

pywbem's handler appends each text piece to the previous one (``children[-1] += content``), which copies the
whole text so far every time expat delivers a piece (at every newline): quadratic in the text length.
"""

from __future__ import annotations

import time

from pywbem import _tupletree as tt

from standby.cimxml import wire

_HEAD = (b'<?xml version="1.0" encoding="utf-8"?><CIM CIMVERSION="2.0" DTDVERSION="2.0">'
         b'<MESSAGE ID="1" PROTOCOLVERSION="1.0"><SIMPLEREQ><IMETHODCALL NAME="X">'
         b'<IPARAMVALUE NAME="Y"><VALUE>')
_TAIL = b"</VALUE></IPARAMVALUE></IMETHODCALL></SIMPLEREQ></MESSAGE></CIM>"


def _seconds(parse: object, body: bytes) -> float:
    started = time.perf_counter()
    parse(body)  # type: ignore[operator]
    return time.perf_counter() - started


def main() -> None:
    for size in (256 * 1024, 1024 * 1024, 4 * 1024 * 1024):
        body = _HEAD + b"ab\n" * (size // 3) + _TAIL
        ours = _seconds(wire.tuple_tree, body)
        small = size <= 1024 * 1024
        theirs = _seconds(lambda b: tt.xml_to_tupletree_sax(b, "bench"), body) if small else None
        shown = f"{theirs:.2f} s" if theirs is not None else "not run (minutes)"
        print(f"{size // 1024:>5} KiB of text lines: tuple_tree {ours * 1000:.0f} ms, pywbem SAX {shown}")


if __name__ == "__main__":
    main()
