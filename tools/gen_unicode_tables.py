#!/usr/bin/env python3
"""Generates src/engine/unicode_tables.c: the Unicode data the normalizers in
src/engine/unicode_normalize.c need (canonical combining classes, full canonical and
compatibility decompositions, primary composition pairs), read from Python's `unicodedata`.

    python3 tools/gen_unicode_tables.py [--unicode-version 9.0|full] [-o src/engine/unicode_tables.c]

The reference `tokenizers` package (0.23.2) normalizes with the Rust crate
unicode-normalization-alignments 0.1.12, whose tables are Unicode 9.0.0. To give the same
results, the default `--unicode-version 9.0` keeps only code points assigned in Unicode 9.0
(the set comes from Perl's core module Unicode::UCD, `prop_invlist("In=9.0")`); all later
characters are treated as unassigned (class 0, no decomposition, never composed), exactly as
the crate does. Unicode's stability policies (decompositions, combining classes and
composition exclusions of assigned characters never change) make this the Unicode 9.0 data.
`--unicode-version full` uses everything Python's unicodedata knows (no Perl needed).

Hangul syllables are not in the tables: unicode_normalize.c handles them algorithmically.
"""
import argparse
import subprocess
import sys
import unicodedata as ud

HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3


def assigned_in(version):
    """Set membership function for code points assigned in the given Unicode version."""
    if version == "full":
        return lambda cp: True
    out = subprocess.run(
        ["perl", "-MUnicode::UCD=prop_invlist", "-e",
         'print Unicode::UCD::UnicodeVersion(), "\\n", join(" ", prop_invlist("In=%s")), "\\n"'
         % version], check=True, capture_output=True, text=True).stdout.split("\n")
    perl_ver, inv = out[0], [int(x) for x in out[1].split()]
    if not inv:
        sys.exit("perl: empty In=%s set" % version)
    if tuple(map(int, perl_ver.split("."))) < tuple(map(int, version.split("."))):
        sys.exit("perl's Unicode %s is older than %s" % (perl_ver, version))
    # inversion list: [start0, end0 + 1, start1, ...]
    ranges = [(inv[i], inv[i + 1] if i + 1 < len(inv) else 0x110000) for i in range(0, len(inv), 2)]

    def f(cp):
        lo, hi = 0, len(ranges)
        while lo < hi:
            mid = (lo + hi) // 2
            if ranges[mid][1] <= cp:
                lo = mid + 1
            else:
                hi = mid
        return lo < len(ranges) and ranges[lo][0] <= cp
    return f


def single_decomp(cp):
    """(is_compat, [code points]) of the one-level mapping, or None."""
    d = ud.decomposition(chr(cp))
    if not d:
        return None
    parts = d.split()
    compat = parts[0].startswith("<")
    if compat:
        parts = parts[1:]
    return compat, [int(x, 16) for x in parts]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--unicode-version", default="9.0")
    ap.add_argument("-o", "--output", default="src/engine/unicode_tables.c")
    args = ap.parse_args()
    if args.unicode_version != "full" and \
            tuple(map(int, ud.unidata_version.split("."))) < tuple(map(int, args.unicode_version.split("."))):
        sys.exit("Python's unicodedata %s is older than %s" % (ud.unidata_version, args.unicode_version))
    ok = assigned_in(args.unicode_version)
    cps = [cp for cp in range(0x110000)
           if not (0xD800 <= cp < 0xE000) and ok(cp) and ud.category(chr(cp)) != "Cn"]
    ccc = {cp: ud.combining(chr(cp)) for cp in cps if ud.combining(chr(cp))}
    one = {}
    for cp in cps:
        if HANGUL_FIRST <= cp <= HANGUL_LAST:
            continue
        d = single_decomp(cp)
        if d:
            one[cp] = d

    def full(cp, compat_ok):
        d = one.get(cp)
        if d is None or (d[0] and not compat_ok):
            return [cp]
        return [x for c in d[1] for x in full(c, compat_ok)]

    # --- decompositions: shared data array, per-character (canonical, compatibility) slices
    data, where = [], {}

    def put(seq):
        key = tuple(seq)
        if key not in where:
            where[key] = len(data)
            data.extend(seq)
        return where[key]

    decomp = []
    for cp in sorted(one):
        canon = full(cp, False)
        compat = full(cp, True)
        if canon == [cp]:
            canon = []
        assert len(canon) <= 7 and 0 < len(compat) <= 31, hex(cp)
        # the run-time code does not decompose table output again
        assert not any(HANGUL_FIRST <= x <= HANGUL_LAST or x in one for x in compat), hex(cp)
        co = put(canon) if canon else 0
        ko = put(compat)
        decomp.append((cp, len(canon), len(compat), co, ko))
    assert len(data) < 65536

    # --- primary composites: canonical pair mappings that NFC keeps (not Full_Composition_Exclusion)
    comp = []
    for cp, (compat, seq) in one.items():
        if compat or len(seq) != 2:
            continue
        if ud.normalize("NFC", chr(cp)) != chr(cp):
            continue  # excluded (script-specific, post-composition version, non-starter)
        if ccc.get(seq[0], 0) != 0:
            continue
        comp.append((seq[0], seq[1], cp))
    comp.sort()

    # --- combining classes: two-level table, block size picked for the smallest source
    best = None
    for shift in range(4, 10):
        bs = 1 << shift
        blocks, index = {}, []
        for b in range(0x110000 >> shift):
            blk = tuple(ccc.get((b << shift) + i, 0) for i in range(bs))
            if blk not in blocks:
                blocks[blk] = len(blocks)
            index.append(blocks[blk])
        size = len(index) * (2 if len(blocks) > 255 else 1) + len(blocks) * bs
        if best is None or size < best[0]:
            best = (size, shift, blocks, index)
    _, shift, blocks, index = best
    assert len(blocks) <= 256, "unorm_ccc_index is uint8_t (unicode_normalize.h)"
    idx_type = "uint8_t"
    # trim the index: blocks past the last non-zero one are all block 0
    last = max(i for i, v in enumerate(index) if v != 0)
    index = index[:last + 1]

    out = []
    w = out.append
    w("/* GENERATED by tools/gen_unicode_tables.py from Python %s's unicodedata (Unicode %s),\n"
      % (".".join(map(str, sys.version_info[:3])), ud.unidata_version))
    w(" * restricted to %s.\n * Do not edit; regenerate with\n" %
      ("all assigned code points" if args.unicode_version == "full"
       else "code points assigned in Unicode %s\n * (the tables of the reference tokenizers package)"
       % args.unicode_version))
    w(" *     python3 tools/gen_unicode_tables.py --unicode-version %s -o src/engine/unicode_tables.c\n"
      % args.unicode_version)
    w(" * Data for src/engine/unicode_normalize.c (layouts in src/engine/unicode_normalize.h). */\n")
    w('#include "engine/unicode_normalize.h"\n\n')
    w('const char unorm_unicode_version[] = "%s";\n\n' %
      (ud.unidata_version if args.unicode_version == "full" else args.unicode_version + ".0"))

    def rows(vals, per, fmt):
        for i in range(0, len(vals), per):
            w("    " + ",".join(fmt % v for v in vals[i:i + per]) + ",\n")

    w("/* canonical combining class: unorm_ccc_block[unorm_ccc_index[cp >> %d]][cp & %d] */\n"
      % (shift, (1 << shift) - 1))
    w("const unsigned unorm_ccc_shift = %d;\n" % shift)
    w("const size_t unorm_ccc_index_len = %d;\n" % len(index))
    w("const %s unorm_ccc_index[%d] = {\n" % (idx_type, len(index)))
    rows(index, 32, "%d")
    w("};\n")
    flat = [v for blk, _ in sorted(blocks.items(), key=lambda kv: kv[1]) for v in blk]
    w("const uint8_t unorm_ccc_blocks[%d] = {\n" % len(flat))
    rows(flat, 32, "%d")
    w("};\n\n")

    w("/* full decompositions, sorted by code point: {cp << 8 | canonical_len << 5 | compat_len,\n"
      " * canonical offset, compatibility offset} into unorm_decomp_data */\n")
    w("const size_t unorm_decomp_count = %d;\n" % len(decomp))
    w("const unorm_decomp_entry unorm_decomp[%d] = {\n" % len(decomp))
    ents = ["{0x%X,%d,%d}" % ((cp << 8) | (cl << 5) | kl, co, ko) for cp, cl, kl, co, ko in decomp]
    rows(ents, 6, "%s")
    w("};\n")
    w("const uint32_t unorm_decomp_data[%d] = {\n" % len(data))
    rows(data, 12, "0x%X")
    w("};\n\n")

    w("/* primary composites, sorted by (first, second): {first, second, composite} */\n")
    w("const size_t unorm_comp_count = %d;\n" % len(comp))
    w("const unorm_comp_entry unorm_comp[%d] = {\n" % len(comp))
    rows(["{0x%X,0x%X,0x%X}" % t for t in comp], 5, "%s")
    w("};\n")

    with open(args.output, "w", encoding="ascii") as f:
        f.write("".join(out))
    print("%s: %d ccc blocks of %d, %d decompositions (%d code points), %d compositions"
          % (args.output, len(blocks), 1 << shift, len(decomp), len(data), len(comp)))


if __name__ == "__main__":
    main()
