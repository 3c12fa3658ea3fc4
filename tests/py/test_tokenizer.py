"""Compares zerostart's C tokenizer (driven through build/asan/tests/test_tok_driver) with the
reference `tokenizers` package, token for token.

For each pre-tokenizer style a small BPE model is trained with tokenizers.trainers.BpeTrainer
on a built-in corpus and saved as tokenizer.json in a tmp dir (some styles then edit the JSON
the way real checkpoints look, e.g. Llama 2's <0xNN> byte tokens, and reload it with
`tokenizers` so the reference always runs the exact file the C code reads).

Invalid UTF-8: the reference API takes str, so the C side gets the raw bytes and the
reference gets bytes.decode("utf-8", errors="replace"); the C tokenizer replaces each maximal
invalid subsequence by U+FFFD exactly like Python does, so the ids must be equal.
"""
import json
import os
import random
import subprocess

import pytest
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors, trainers
from tokenizers.decoders import DecodeStream

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DRIVER = os.path.join(ROOT, "build", "asan", "tests", "test_tok_driver")

LLAMA3_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
              r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
             r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

TRAIN_CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's what they'd say, isn't it? We'll see.",
    "In 2024 the server handled 1234567 requests at 99.95% availability; latency p50=12ms.",
    "def encode(self, text: str) -> list[int]:\n    return [self.vocab[t] for t in text.split()]\n",
    "for (int i = 0; i < n; i++) {\n\tsum += a[i] * b[i];\n}\n",
    "大语言模型的推理服务需要高效的分词器。今天天气很好，我们去公园散步吧。",
    "東京は日本の首都です。ひらがなとカタカナと漢字を使います。ありがとうございます！",
    "Emoji: 😀 🚀 👍🏽 ❤️ 🇫🇷 — and “quotes”, ‘single’, ellipsis…",
    "    indented   text\twith\ttabs\n\n\nand  multiple   spaces   and trailing spaces   ",
    "Numbers 3.14159 2.71828 1000000 0x1F 1e-9 and ５６７ and ٣٤٥ and Ⅻ ²³",
    "Mixed: naïve café résumé Ångström coöperate façade; Straße; Ελληνικά; русский текст.",
] * 3

TEST_CORPUS = [
    "",
    " ",
    "Hello world",
    " Hello world",
    "Hello, world! How's it going? I'M FINE, THEY'LL SEE.",
    "The quick brown fox jumps over the lazy dog.\n",
    "def f(x):\n    return x ** 2  # square\n\n\n",
    "if (a && b) { return c[i] >= 0 ? \"yes\" : 'no'; }",
    "    four spaces, then\ttab\t\ttwo tabs, then\n\n\nthree newlines \r\n crlf",
    "trailing spaces     ",
    "   leading spaces",
    " \t \n \u3000 \u00a0 \u2003 mixed whitespace \u0085 nel",
    "12345678901234567890 3.14 1,000,000 007",
    "大语言模型的推理服务需要高效的分词器。",
    "我们去公园散步吧，今天天气很好！",
    "東京は日本の首都です。カタカナ、ひらがな。",
    "😀😀😀 🚀 👍🏽 ❤️ 🇫🇷 family: 👨‍👩‍👧‍👦",
    "naïve café résumé Ångström; Straße; Ελληνικά; русский",
    "zero\x00byte and control \x01\x02\x7f chars",
    "a" * 300,
    "ab " * 200,
    "<s>inline special</s> and <unk> text",
    "<|endoftext|>after special<|endoftext|>",
    "say <|begin_of_text|>hi",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
    "e\u0301 vs \u00e9 (combining vs precomposed)",
    "tab\tend\t",
    "\n",
    "\n\n  \n",
    "x" + " " * 50 + "y",
]
INVALID_UTF8 = [
    b"bad \xff byte",
    b"truncated \xe6\x97",
    b"\xe6\x97 leading truncated",
    b"surrogate \xed\xa0\x80 here",
    b"overlong \xc0\xaf and \xe0\x80\xaf",
    b"mixed \xf0\x9f\x98 \xf0\x9f\x98\x80 ok \x80\x80 end",
    b"\xf4\x90\x80\x80 too large, \xf5 invalid lead",
    b"\xc3",
]


def corpus_bytes():
    return [t.encode("utf-8") for t in TEST_CORPUS] + INVALID_UTF8


# ---------------------------------------------------------------------------------------
# driver

@pytest.fixture(scope="session")
def driver():
    if not os.path.exists(DRIVER):
        subprocess.run(["make", "-s", "build/asan/tests/test_tok_driver"], cwd=ROOT, check=True)
    return DRIVER


def run_driver(driver, args, data):
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1")
    p = subprocess.run([driver] + args, input=data, capture_output=True, env=env, timeout=300)
    assert p.returncode == 0, f"driver {args} failed: {p.stderr.decode(errors='replace')[-3000:]}"
    return p.stdout


def parse_records(out, count):
    res, pos = [], 0
    for _ in range(count):
        nl = out.index(b"\n", pos)
        head = out[pos:nl]
        if head.startswith(b"!"):
            res.append(("error", head[1:].decode()))
            pos = nl + 1
            continue
        n = int(head)
        res.append(out[nl + 1:nl + 1 + n].decode("utf-8"))
        pos = nl + 1 + n
    assert pos == len(out)
    return res


def c_encode(driver, path, texts, add_special):
    data = b"".join(b"%d\n" % len(t) + t for t in texts)
    lines = run_driver(driver, ["encode", path, str(int(add_special))], data).split(b"\n")
    assert lines[-1] == b""
    out = []
    for ln in lines[:-1]:
        assert not ln.startswith(b"!"), ln.decode()
        out.append([int(x) for x in ln.split()])
    assert len(out) == len(texts)
    return out


def c_decode(driver, path, seqs, skip_special, cmd="decode"):
    data = "".join(" ".join(map(str, s)) + "\n" for s in seqs).encode()
    out = run_driver(driver, [cmd, path, str(int(skip_special))], data)
    if cmd == "decode":
        return parse_records(out, len(seqs))
    flat = parse_records(out, sum(len(s) + 1 for s in seqs))
    res = []
    for s in seqs:
        res.append(flat[:len(s) + 1])
        flat = flat[len(s) + 1:]
    return res


# ---------------------------------------------------------------------------------------
# tokenizer builders: each returns the tokenizer.json text

def train(tok, vocab_size=600, special=(), alphabet=None, limit_alphabet=None):
    kw = {}
    if alphabet is not None:
        kw["initial_alphabet"] = alphabet
    if limit_alphabet is not None:
        kw["limit_alphabet"] = limit_alphabet
    tr = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special),
                             show_progress=False, **kw)
    tok.train_from_iterator(TRAIN_CORPUS, trainer=tr)
    return tok


def build_gpt2(add_prefix_space=False):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    train(tok, special=["<|endoftext|>"], alphabet=pre_tokenizers.ByteLevel.alphabet())
    return tok.to_str()


def build_llama3(string_merges=False):
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PAT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    train(tok, vocab_size=700, alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    j = json.loads(tok.to_str())
    assert j["model"]["ignore_merges"] is True
    if string_merges:
        j["model"]["merges"] = [m if isinstance(m, str) else " ".join(m)
                                for m in j["model"]["merges"]]
    return json.dumps(j, ensure_ascii=False)


def build_qwen2_no_nfc():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PAT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    train(tok, special=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
          alphabet=pre_tokenizers.ByteLevel.alphabet())
    return tok.to_str()


def _sp_assemble(trained_json, normalizer, pre_tokenizer, decoder, extra_added=()):
    """Rebuilds a trained SentencePiece-style model the way Llama 2 ships it: <unk>, <s>,
    </s>, then the 256 <0xNN> byte tokens, then the learned pieces."""
    j = json.loads(trained_json)
    learned = sorted(j["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for t, _ in learned:
        if t not in vocab:
            vocab[t] = len(vocab)
    added = [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, c in enumerate(["<unk>", "<s>", "</s>"])]
    for content, flags in extra_added:
        if content not in vocab:
            vocab[content] = len(vocab)
        a = {"id": vocab[content], "content": content, "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": False}
        a.update(flags)
        added.append(a)
    j["model"].update({"vocab": vocab, "byte_fallback": True, "fuse_unk": True,
                       "unk_token": "<unk>", "ignore_merges": False})
    j["added_tokens"] = added
    j["normalizer"] = normalizer
    j["pre_tokenizer"] = pre_tokenizer
    j["decoder"] = decoder
    j["post_processor"] = json.loads(processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]).__getstate__())
    return json.dumps(j, ensure_ascii=False)


SP_DECODER = {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
    {"type": "ByteFallback"}, {"type": "Fuse"},
    {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}


def build_llama2(extra_added=()):
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    train(tok, vocab_size=400, special=["<unk>", "<s>", "</s>"], limit_alphabet=80)
    norm = json.loads(tok.to_str())["normalizer"]
    return _sp_assemble(tok.to_str(), norm, None, SP_DECODER, extra_added)


def build_mistral(prepend_scheme="first", split=False, meta_decoder=False):
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend_scheme,
                                                 split=split)
    train(tok, vocab_size=400, special=["<unk>", "<s>", "</s>"], limit_alphabet=80)
    pre = json.loads(tok.to_str())["pre_tokenizer"]
    dec = SP_DECODER
    if meta_decoder:
        dec = {"type": "Sequence", "decoders": [
            {"type": "Metaspace", "replacement": "▁", "prepend_scheme": prepend_scheme,
             "split": split}, {"type": "ByteFallback"}, {"type": "Fuse"}]}
    return _sp_assemble(tok.to_str(), None, pre, dec)


def build_split_behaviors():
    """Exercises Split behaviours/invert, Digits and Removed on a byte-level model."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(" ", behavior="merged_with_next"),
        pre_tokenizers.Split(Regex(r"[,.;:!?]"), behavior="merged_with_previous"),
        pre_tokenizers.Split(Regex(r"\p{Han}+"), behavior="isolated"),
        pre_tokenizers.Split(Regex(r"[A-Z]+"), behavior="contiguous", invert=True),
        pre_tokenizers.Split(Regex(r"\t+"), behavior="removed"),
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    train(tok, alphabet=pre_tokenizers.ByteLevel.alphabet())
    return tok.to_str()


def build_added_flags():
    """Added tokens with lstrip/rstrip/single_word/normalized, a normalizer (Replace) applied
    to normalized added tokens, and RobertaProcessing."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.Replace(Regex(r"[0-9]"), "#")])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    train(tok, special=["<s>", "</s>"], alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=False, special=True)])
    tok.add_tokens([
        AddedToken("fox", single_word=True),
        AddedToken("[R]", rstrip=True, normalized=False),
        AddedToken("num7", normalized=True),      # normalized to "num#"
        AddedToken("over the", normalized=True),
    ])
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")),
                                                      ("<s>", tok.token_to_id("<s>")))
    return tok.to_str()


def build_gpt2_suffix():
    """continuing_subword_prefix / end_of_word_suffix handling."""
    tok = Tokenizer(models.BPE(continuing_subword_prefix="##", end_of_word_suffix="</w>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=600, show_progress=False, continuing_subword_prefix="##",
                             end_of_word_suffix="</w>",
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TRAIN_CORPUS, trainer=tr)
    return tok.to_str()


STYLES = {
    "gpt2": build_gpt2,
    "gpt2_prefix_space": lambda: build_gpt2(add_prefix_space=True),
    "llama3": build_llama3,
    "llama3_string_merges": lambda: build_llama3(string_merges=True),
    "qwen2_no_nfc": build_qwen2_no_nfc,
    "llama2": build_llama2,
    "mistral_first": build_mistral,
    "metaspace_always_split": lambda: build_mistral("always", True, meta_decoder=True),
    "metaspace_never": lambda: build_mistral("never", True, meta_decoder=True),
    "split_behaviors": build_split_behaviors,
    "added_flags": build_added_flags,
    "subword_affixes": build_gpt2_suffix,
}


@pytest.fixture(scope="module", params=sorted(STYLES))
def style(request, tmp_path_factory):
    text = STYLES[request.param]()
    d = tmp_path_factory.mktemp(request.param)
    path = str(d / "tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return request.param, path, Tokenizer.from_file(path)


def ref_text(b):
    return b.decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------
# tests

@pytest.mark.parametrize("add_special", [False, True])
def test_encode_matches_reference(driver, style, add_special):
    name, path, ref = style
    texts = corpus_bytes()
    got = c_encode(driver, path, texts, add_special)
    for t, ids in zip(texts, got):
        want = ref.encode(ref_text(t), add_special_tokens=add_special).ids
        assert ids == want, f"{name}: {t!r}\n C: {ids}\nref: {want}"


def test_encode_long_text(driver, style):
    """100 KB of mixed text in one call (exercises long words / long whitespace runs)."""
    name, path, ref = style
    rnd = random.Random(7)
    parts = []
    while sum(map(len, parts)) < 100_000:
        parts.append(rnd.choice(TEST_CORPUS[2:]) + rnd.choice([" ", "\n", "", "  ", "\t"]))
    text = "".join(parts).encode()
    got = c_encode(driver, path, [text], True)[0]
    assert got == ref.encode(text.decode(), add_special_tokens=True).ids


def test_decode_matches_reference(driver, style):
    name, path, ref = style
    seqs = [ref.encode(ref_text(t), add_special_tokens=True).ids for t in corpus_bytes()]
    rnd = random.Random(1)
    vs = ref.get_vocab_size()
    seqs += [[rnd.randrange(vs) for _ in range(rnd.randrange(1, 30))] for _ in range(60)]
    for skip in (False, True):
        got = c_decode(driver, path, seqs, skip)
        for s, g in zip(seqs, got):
            want = ref.decode(s, skip_special_tokens=skip)
            assert g == want, f"{name}: decode({s}, skip={skip})\n C: {g!r}\nref: {want!r}"


def test_roundtrip_plain_text(driver, style):
    """decode(encode(text)) == text for text every style can represent exactly."""
    name, path, ref = style
    texts = ["Hello world, this is a test.", "def f(x):\n    return x", "123 456"]
    enc = c_encode(driver, path, [t.encode() for t in texts], False)
    got = c_decode(driver, path, enc, True)
    for t, g in zip(texts, got):
        assert g == ref.decode(ref.encode(t, add_special_tokens=False).ids)
        if name not in ("split_behaviors", "added_flags", "gpt2_prefix_space", "subword_affixes",
                        "metaspace_never"):
            assert g == t, f"{name}: {t!r} -> {g!r}"


def test_stream_matches_reference(driver, style):
    name, path, ref = style
    seqs = [ref.encode(ref_text(t), add_special_tokens=True).ids for t in corpus_bytes()]
    for skip in (False, True):
        got = c_decode(driver, path, seqs, skip, cmd="stream")
        full = c_decode(driver, path, seqs, skip)
        for s, chunks, whole in zip(seqs, got, full):
            assert "".join(chunks) == whole, f"{name}: stream concat != decode for {s}"
            for c in chunks:
                assert "\ufffd" not in c or "\ufffd" in whole
            ds = DecodeStream(skip_special_tokens=skip)
            try:
                want = [ds.step(ref, i) or "" for i in s]
            except Exception:  # tokenizers raises on an invalid prefix; nothing to compare
                continue
            assert chunks[:-1] == want, f"{name}: stream steps differ for {s}"


def test_invalid_ids_are_errors(driver, style):
    name, path, ref = style
    vs = ref.get_vocab_size()
    got = c_decode(driver, path, [[0, vs], [-1], [vs + 1000]], True)
    for g in got:
        assert isinstance(g, tuple) and g[0] == "error" and g[1].startswith("EINVAL")
    assert str(vs) in got[0][1] and "position 1" in got[0][1]


def test_info(driver, style):
    name, path, ref = style
    out = run_driver(driver, ["info", path], b"").split()
    vs, bos, eos = (int(x) for x in out)
    assert vs == ref.get_vocab_size()
    if name.startswith("llama3"):
        assert bos == ref.token_to_id("<|begin_of_text|>")
        assert eos == ref.token_to_id("<|end_of_text|>")
    if name in ("llama2", "mistral_first"):
        assert (bos, eos) == (1, 2)
    if name == "gpt2":
        assert bos == -1 and eos == ref.token_to_id("<|endoftext|>")


# ---------------------------------------------------------------------------------------
# refused configurations: a clear error naming the field, never wrong tokens

REFUSED = [
    (["normalizer"], {"type": "Strip", "strip_left": True, "strip_right": True},
     "unsupported normalizer 'Strip'"),
    (["normalizer"], {"type": "Lowercase"}, "unsupported normalizer 'Lowercase'"),
    (["pre_tokenizer"], {"type": "Whitespace"}, "unsupported pre_tokenizer 'Whitespace'"),
    (["decoder"], {"type": "WordPiece", "prefix": "##", "cleanup": True}, "unsupported decoder"),
    (["model", "type"], "WordPiece", "model.type 'WordPiece'"),
    (["model", "dropout"], 0.1, "model.dropout"),
    (["truncation"], {"max_length": 10, "strategy": "LongestFirst", "stride": 0,
                      "direction": "Right"}, "truncation"),
    (["pre_tokenizer"], {"type": "Split", "pattern": {"Regex": r"\w+"}, "behavior": "Isolated",
                         "invert": False}, "\\w"),
    (["pre_tokenizer"], {"type": "Split", "pattern": {"Regex": r"a*"}, "behavior": "Isolated",
                         "invert": False}, "empty string"),
    (["pre_tokenizer"], {"type": "Split", "pattern": {"Regex": r"(unclosed"},
                         "behavior": "Isolated", "invert": False}, "invalid regex"),
]


@pytest.mark.parametrize("keys,value,needle", REFUSED)
def test_refused_configs(driver, tmp_path, keys, value, needle):
    j = json.loads(build_gpt2())
    o = j
    for k in keys[:-1]:
        o = o[k]
    o[keys[-1]] = value
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(j))
    p = subprocess.run([DRIVER, "info", str(path)], capture_output=True)
    assert p.returncode == 2
    assert needle in p.stderr.decode(), p.stderr.decode()
