"""Unicode normalizers (NFC, NFD, NFKC, NFKD) against the reference `tokenizers` package.

1. The normalization itself, through the driver mode of build/asan/tests/test_unicode_normalize
   (stdin text -> stdout normalized text): every code point 0..0x10FFFF in one string, and
   thousands of random strings built from combining marks, composable starters, Hangul jamo
   and syllables, compatibility characters and newer-than-Unicode-9 characters, compared
   with the reference's normalizers.NFx().normalize_str().
   The reference uses Unicode 9.0 tables (Rust crate unicode-normalization-alignments);
   Python's unicodedata (Unicode 14.0 in the venv's Python 3.11) agrees with it on the text
   corpus below and differs only on characters assigned after Unicode 9.0 — checked too.
2. Token ids: Qwen2-style tokenizers (byte-level BPE + NFC normalizer, as Qwen2/2.5 ship) and
   variants with NFD/NFKC/NFKD, normalized added tokens and Metaspace, trained with tokenizers
   and compared id for id through build/asan/tests/test_tok_driver.
"""
import json
import os
import random
import subprocess
import unicodedata

import pytest
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, trainers

import test_tokenizer as tt

ROOT = tt.ROOT
NORM_DRIVER = os.path.join(ROOT, "build", "asan", "tests", "test_unicode_normalize")
FORMS = ["NFC", "NFD", "NFKC", "NFKD"]
REF = {f: getattr(normalizers, f)() for f in FORMS}

NFC_CORPUS = [
    "e\u0301 vs \u00e9, cafe\u0301 vs caf\u00e9, A\u030a vs \u00c5 vs \u212b (angstrom)",
    "Ti\u00ea\u0301ng Vi\u1ec7t c\u00f3 nhi\u1ec1u d\u1ea5u: Vi\u00ea\u0323t, ngu\u031bo\u031b\u0300i",
    "Tie\u0302\u0301ng Vie\u0323\u0302t (decomposed, marks in both orders)",
    "\u1112\u1161\u11ab\u1100\u116e\u11a8\u110b\u1165 (jamo) vs \ud55c\uad6d\uc5b4 (syllables)",
    "\u1112\u1161 \u1112\u1161\u11a7 \ud558\u11ab \ud55c\u11ab \u3131\u314f",
    "ligatures \ufb01le \ufb02ow \ufb00 \ufb03; circled \u2460\u2461\u2473; \u3251",
    "\uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 \uff21\uff22\uff23 \uff11\uff12\uff13\uff01",
    "x\u00b2 + y\u00b3, \u00bd \u2153, \u2126 \u212a, \u2163 \u216b, \u33a1 \u2122 \u00a0nbsp",
    "\u0915\u093c \u0958 \u0929 \u0928\u093c (Devanagari nukta, exclusions)",
    "\u1e9b\u0323 \u0344 \u0340\u0341 \u0374 \u037e \u0387 \u2adc \u2add\u0338",
    "a\u0301\u0316\u0300\u0317 \u0301leading mark, \u0b47\u0b3e \u0b4b, \u09c7\u09be",
    "\u1f82 \u03b1\u0345\u0313\u0300 \u1fb3\u0301 Greek polytonic",
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f"
    "\u031e\u0320\u034dA\u0336\u0317\u032c\u0325\u0330L\u0334\u0347G\u035bO zalgo",
    "Stra\u00dfe \u0130stanbul \u0131 \u01c4 \u01c5 \u01c6 \u1e9e \ufb06",
    "\u3300 \u3384 \u337b \u4e00\u4e8c\u4e09 \uf900 \uf9ff \u2f00 \u2fd5",
    "emoji \U0001f600\U0001f3fd \u2764\ufe0f \U0001f1eb\U0001f1f7 \U0001f468\u200d\U0001f469",
    "math \U0001d400\U0001d4b6\U0001d538 \U0001d7ce \u2102 \u210d",
    "new \U00011935\U00011930 \U00011938 \u0d3b\u0d3c \ua7f2 \u32ff",
]

TRAIN = tt.TRAIN_CORPUS + [unicodedata.normalize("NFC", t) for t in NFC_CORPUS] * 3


# ---------------------------------------------------------------------------------------
# drivers

def _built(path, target):
    if not os.path.exists(path):
        subprocess.run(["make", "-s", target], cwd=ROOT, check=True)
    return path


@pytest.fixture(scope="session")
def norm_driver():
    return _built(NORM_DRIVER, "build/asan/tests/test_unicode_normalize")


@pytest.fixture(scope="session")
def driver():
    return _built(tt.DRIVER, "build/asan/tests/test_tok_driver")


def c_normalize(drv, form, text):
    out = tt.run_driver(drv, [form], text.encode("utf-8"))
    assert not out.startswith(b"!"), out[:500].decode(errors="replace")
    return out.decode("utf-8")


# A private-use starter that never composes and is in no test text: texts joined by it
# normalize independently.
SEP = "\ue000"


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i, a[max(0, i - 3):i + 5], b[max(0, i - 3):i + 5]
    return min(len(a), len(b)), a[-5:], b[-5:]


# ---------------------------------------------------------------------------------------
# 1. normalization

ALL_CPS = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)


@pytest.mark.parametrize("form", FORMS)
def test_every_code_point_matches_reference(norm_driver, form):
    got = c_normalize(norm_driver, form, ALL_CPS)
    want = REF[form].normalize_str(ALL_CPS)
    assert got == want, f"{form}: first difference at {first_diff(got, want)!r}"


@pytest.mark.parametrize("form", FORMS)
def test_every_code_point_vs_unicodedata(norm_driver, form):
    """Each code point alone: zerostart equals Python's unicodedata except for the few
    characters assigned after Unicode 9.0 that have a mapping, which it (like the reference)
    leaves unchanged."""
    cps = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000 and c != ord(SEP)]
    got = c_normalize(norm_driver, form, SEP.join(map(chr, cps))).split(SEP)
    assert len(got) == len(cps)
    diff = [c for c, g in zip(cps, got) if g != unicodedata.normalize(form, chr(c))]
    assert all(got[cps.index(c)] == chr(c) for c in diff), [hex(c) for c in diff][:20]
    assert len(diff) < 100, len(diff)
    assert 0x32FF in diff or form in ("NFC", "NFD")  # ㋿ (Unicode 12.1): compatibility only


def _alphabet():
    marks = [chr(c) for c in range(0x110000)
             if not 0xD800 <= c < 0xE000 and unicodedata.combining(chr(c))]
    firsts, seconds0 = set(), set()
    for c in range(0x110000):
        if 0xD800 <= c < 0xE000:
            continue
        d = unicodedata.decomposition(chr(c))
        if d and not d.startswith("<") and len(d.split()) == 2:
            a, b = (chr(int(x, 16)) for x in d.split())
            firsts.add(a)
            if not unicodedata.combining(b):
                seconds0.add(b)  # starters that compose with a preceding starter
    jamo = [chr(c) for c in list(range(0x1100, 0x1113)) + list(range(0x1161, 0x1176)) +
            list(range(0x11a7, 0x11c4)) + [0x1160, 0x11ff, 0x3131, 0x314f]]
    syll = ["\uac00", "\uac01", "\ud7a3", "\ud558", "\ud55c", "\ub098", "\ub09c"]
    compat = [chr(c) for c in range(0xa0, 0x30000, 7)
              if unicodedata.decomposition(chr(c)).startswith("<")]
    newer = ["\U00011935", "\U00011930", "\U00011938", "\u0d3b", "\u1df6", "\u32ff", "\ua7f2"]
    return [sorted(firsts), sorted(seconds0), marks, jamo, syll, compat, newer,
            list("aeiouAEIOU nz")]


@pytest.mark.parametrize("form", FORMS)
def test_random_sequences_match_reference(norm_driver, form):
    groups = _alphabet()
    rnd = random.Random(20240601 + FORMS.index(form))
    texts = []
    for _ in range(4000):
        n = rnd.randrange(1, 10)
        texts.append("".join(rnd.choice(rnd.choice(groups)) for _ in range(n)))
    got = c_normalize(norm_driver, form, SEP.join(texts)).split(SEP)
    assert len(got) == len(texts)
    for t, g in zip(texts, got):
        want = REF[form].normalize_str(t)
        assert g == want, f"{form}({t!r}) = {g!r}, reference {want!r}"


@pytest.mark.parametrize("form", FORMS)
def test_corpus_matches_reference_and_unicodedata(norm_driver, form):
    texts = NFC_CORPUS[:-1] + tt.TEST_CORPUS  # the last NFC_CORPUS line has post-9.0 characters
    got = c_normalize(norm_driver, form, SEP.join(texts)).split(SEP)
    assert len(got) == len(texts)
    for t, g in zip(texts, got):
        want = REF[form].normalize_str(t)
        assert want == unicodedata.normalize(form, t), f"reference != unicodedata on {t!r}"
        assert g == want, f"{form}({t!r}) = {g!r}, reference {want!r}"
    # characters assigned after Unicode 9.0: the reference (and zerostart) leave them alone
    new = NFC_CORPUS[-1]
    assert c_normalize(norm_driver, form, new) == REF[form].normalize_str(new)
    if form == "NFC":
        assert unicodedata.normalize(form, new) != REF[form].normalize_str(new)


def test_invalid_utf8_is_an_error(norm_driver):
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1")
    p = subprocess.run([norm_driver, "NFC"], input=b"ok \xe6\x97", capture_output=True, env=env)
    assert p.returncode == 0
    assert p.stdout.startswith(b"!EINVAL") and b"byte 3" in p.stdout


# ---------------------------------------------------------------------------------------
# 2. tokenizers with Unicode normalizers

def _byte_level(normalizer, added=()):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(tt.QWEN2_PAT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=700, show_progress=False,
                             special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TRAIN, trainer=tr)
    if added:
        tok.add_tokens(list(added))
    return tok.to_str()


def _metaspace_nfd():
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.NFD()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tr = trainers.BpeTrainer(vocab_size=400, show_progress=False,
                             special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=120)
    tok.train_from_iterator(TRAIN, trainer=tr)
    pre = json.loads(tok.to_str())["pre_tokenizer"]
    return tt._sp_assemble(tok.to_str(), {"type": "NFD"}, pre, tt.SP_DECODER,
                           extra_added=[("<mark>", {"normalized": False})])


NFC_STYLES = {
    # what Qwen2/Qwen2.5 tokenizer.json files declare
    "qwen2_nfc": lambda: _byte_level(normalizers.NFC()),
    "nfd": lambda: _byte_level(normalizers.NFD()),
    "nfkc_added": lambda: _byte_level(
        normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex("[0-9]"), "#")]),
        added=[AddedToken("\ufb01x", normalized=True), AddedToken("caf\u00e9", normalized=True),
               AddedToken("\u2460raw", normalized=False)]),
    "nfkd": lambda: _byte_level(normalizers.NFKD()),
    "metaspace_nfd": _metaspace_nfd,
}


@pytest.fixture(scope="module", params=sorted(NFC_STYLES))
def nstyle(request, tmp_path_factory):
    text = NFC_STYLES[request.param]()
    path = str(tmp_path_factory.mktemp(request.param) / "tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return request.param, path, Tokenizer.from_file(path)


def _texts():
    texts = [t.encode() for t in NFC_CORPUS + tt.TEST_CORPUS] + tt.INVALID_UTF8
    texts += [b"\xcc\x81\xcc\x96 starts with marks", "\u0301".encode(),
              "\ufb01x and caf\u00e9 and cafe\u0301 \u2460raw \u2460\u2460".encode(),
              "<mark>e\u0301<mark>\u0301".encode(), "<|im_start|>e\u0301<|im_end|>".encode()]
    rnd = random.Random(5)
    groups = _alphabet()
    for _ in range(300):
        texts.append("".join(rnd.choice(rnd.choice(groups)) for _ in range(rnd.randrange(1, 25)))
                     .encode())
    return texts


@pytest.mark.parametrize("add_special", [False, True])
def test_encode_matches_reference(driver, nstyle, add_special):
    name, path, ref = nstyle
    texts = _texts()
    got = tt.c_encode(driver, path, texts, add_special)
    for t, ids in zip(texts, got):
        want = ref.encode(tt.ref_text(t), add_special_tokens=add_special).ids
        assert ids == want, f"{name}: {t!r}\n C: {ids}\nref: {want}"


def test_encode_long_text(driver, nstyle):
    name, path, ref = nstyle
    rnd = random.Random(11)
    parts = []
    while sum(map(len, parts)) < 60_000:
        parts.append(rnd.choice(NFC_CORPUS + tt.TEST_CORPUS[2:]) + rnd.choice([" ", "\n", ""]))
    text = "".join(parts).encode()
    assert tt.c_encode(driver, path, [text], True)[0] == ref.encode(text.decode()).ids


def test_decode_matches_reference(driver, nstyle):
    name, path, ref = nstyle
    seqs = [ref.encode(tt.ref_text(t)).ids for t in _texts()[:60]]
    for skip in (False, True):
        for s, g in zip(seqs, tt.c_decode(driver, path, seqs, skip)):
            assert g == ref.decode(s, skip_special_tokens=skip), f"{name}: decode({s})"


def test_normalized_added_token_is_normalized(driver, tmp_path):
    """An added token with normalized=True is matched on the NFKC form ("ﬁx" -> "fix")."""
    j = json.loads(NFC_STYLES["nfkc_added"]())
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(j))
    ref = Tokenizer.from_file(str(path))
    fix = ref.token_to_id("\ufb01x")
    assert fix is not None
    for text in ["fix", "\ufb01x", "a fix b"]:
        got = tt.c_encode(driver, str(path), [text.encode()], False)[0]
        want = ref.encode(text, add_special_tokens=False).ids
        assert got == want and fix in got, (text, got, want)
