/* Unit tests for the tokenizer (include/zerostart/tokenizer.h): byte-level BPE and
 * SentencePiece-style BPE on hand-written tokenizer.json files, added tokens, the streaming
 * decoder, id validation, invalid UTF-8 input, and clear errors for malformed or
 * unsupported files. Token-for-token agreement with the reference `tokenizers` package is
 * tested by tests/py/test_tokenizer.py. */
#include "zerostart/tokenizer.h"
#include "zt.h"

#include <stdint.h>
#include <stdlib.h>

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) abort(); /* test program: out of memory is fatal */
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* GPT-2 bytes_to_unicode() as UTF-8, JSON-escaped. */
static void sb_byte_char(sbuf *b, unsigned c) {
    unsigned cp;
    if ((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE))
        cp = c;
    else if (c <= 0x20)
        cp = 256 + c;
    else if (c >= 0x7F && c <= 0xA0)
        cp = 289 + (c - 0x7F);
    else
        cp = 323;
    char tmp[8];
    if (cp == '"' || cp == '\\') {
        snprintf(tmp, sizeof tmp, "\\%c", (char)cp);
    } else if (cp < 0x80) {
        snprintf(tmp, sizeof tmp, "%c", (char)cp);
    } else {
        tmp[0] = (char)(0xC0 | (cp >> 6));
        tmp[1] = (char)(0x80 | (cp & 0x3F));
        tmp[2] = 0;
    }
    sb_str(b, tmp);
}

/* Byte-level BPE (GPT-2 style): ids 0..255 are the bytes, then he=256, ll=257, hell=258,
 * Ġw=259, <|endoftext|>=260 (special). `extra` is spliced into the top-level object. */
static char *gpt2_json(const char *extra) {
    sbuf b = {0};
    sb_str(&b, "{");
    if (strstr(extra, "\"pre_tokenizer\"") == NULL) sb_str(&b, "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false},");
    sb_str(&b, "\"model\":{\"type\":\"BPE\",\"vocab\":{");
    for (unsigned c = 0; c < 256; c++) {
        char num[16];
        sb_str(&b, "\"");
        sb_byte_char(&b, c);
        snprintf(num, sizeof num, "\":%u,", c);
        sb_str(&b, num);
    }
    sb_str(&b, "\"he\":256,\"ll\":257,\"hell\":258,\"\xC4\xA0w\":259},"
               "\"merges\":[\"h e\",[\"l\",\"l\"],\"he ll\",\"\xC4\xA0 w\"]},"
               "\"added_tokens\":[{\"id\":260,\"content\":\"<|endoftext|>\",\"special\":true,"
               "\"normalized\":false}]");
    if (strstr(extra, "\"decoder\"") == NULL) sb_str(&b, ",\"decoder\":{\"type\":\"ByteLevel\"}");
    sb_str(&b, extra);
    sb_str(&b, "}");
    return b.p;
}

/* SentencePiece-style (Llama 2): <unk>=0 <s>=1 </s>=2, <0xC3>=3 <0xA9>=4 <0xE6>=5
 * <0x97>=6 <0xA5>=7, ▁=8 a=9 b=10 ▁a=11 ab=12 ▁ab=13 c=14 */
static const char SP_JSON[] =
    "{\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":true,"
    "\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"<0xC3>\":3,\"<0xA9>\":4,\"<0xE6>\":5,"
    "\"<0x97>\":6,\"<0xA5>\":7,\"\xE2\x96\x81\":8,\"a\":9,\"b\":10,\"\xE2\x96\x81" "a\":11,"
    "\"ab\":12,\"\xE2\x96\x81" "ab\":13,\"c\":14},"
    "\"merges\":[\"\xE2\x96\x81 a\",\"a b\",\"\xE2\x96\x81" "a b\"]},"
    "\"added_tokens\":["
    "{\"id\":0,\"content\":\"<unk>\",\"special\":true,\"normalized\":false},"
    "{\"id\":1,\"content\":\"<s>\",\"special\":true,\"normalized\":false},"
    "{\"id\":2,\"content\":\"</s>\",\"special\":true,\"normalized\":false}],"
    "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":"
    "\"\xE2\x96\x81\"},{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":"
    "\"\xE2\x96\x81\"}]},"
    "\"pre_tokenizer\":null,"
    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":"
    "{\"id\":\"<s>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],"
    "\"pair\":[],\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[1],\"tokens\":[\"<s>\"]}}},"
    "\"decoder\":{\"type\":\"Sequence\",\"decoders\":["
    "{\"type\":\"Replace\",\"pattern\":{\"String\":\"\xE2\x96\x81\"},\"content\":\" \"},"
    "{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},"
    "{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]}}";

static zs_tok_t *load(const char *json) {
    zs_err_t err = {0};
    zs_tok_t *tok = NULL;
    int rc = zs_tok_load_from_string(json, strlen(json), "test.json", &tok, &err);
    if (rc) fprintf(stderr, "  load failed: %s\n", err.msg);
    return tok;
}

static int ids_eq(const int32_t *a, size_t n, const int32_t *b, size_t m) {
    return n == m && (n == 0 || memcmp(a, b, n * sizeof *a) == 0);
}

static void test_byte_level_encode_decode(void) {
    char *json = gpt2_json("");
    zs_tok_t *tok = load(json);
    free(json);
    ZT_REQUIRE(tok != NULL);
    zs_err_t err = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    ZT_CHECK(zs_tok_encode(tok, "hello world<|endoftext|>", 24, 0, &ids, &n, &err) == 0);
    const int32_t want[] = {258, 'o', 259, 'o', 'r', 'l', 'd', 260};
    ZT_CHECK(ids_eq(ids, n, want, 8));
    char *text = NULL;
    size_t len = 0;
    ZT_CHECK(zs_tok_decode(tok, ids, n, 0, &text, &len, &err) == 0);
    ZT_CHECK(text && strcmp(text, "hello world<|endoftext|>") == 0 && len == 24);
    free(text);
    ZT_CHECK(zs_tok_decode(tok, ids, n, 1, &text, &len, &err) == 0);
    ZT_CHECK(text && strcmp(text, "hello world") == 0);
    free(text);
    free(ids);
    ZT_CHECK(zs_tok_vocab_size(tok) == 261);
    ZT_CHECK(zs_tok_token_to_id(tok, "hell", 4) == 258);
    ZT_CHECK(zs_tok_token_to_id(tok, "<|endoftext|>", 13) == 260);
    ZT_CHECK(zs_tok_token_to_id(tok, "nope", 4) == -1);
    size_t tl = 0;
    const char *t = zs_tok_id_to_token(tok, 259, &tl);
    ZT_CHECK(t && tl == 3 && memcmp(t, "\xC4\xA0w", 3) == 0);
    ZT_CHECK(zs_tok_id_to_token(tok, 261, NULL) == NULL);
    ZT_CHECK(zs_tok_is_special(tok, 260) == 1 && zs_tok_is_special(tok, 258) == 0);
    ZT_CHECK(zs_tok_bos_id(tok) == -1);
    ZT_CHECK(zs_tok_eos_id(tok) == 260);
    zs_tok_free(tok);
}

static void test_invalid_utf8_is_replaced(void) {
    char *json = gpt2_json("");
    zs_tok_t *tok = load(json);
    free(json);
    ZT_REQUIRE(tok != NULL);
    zs_err_t err = {0};
    int32_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    /* E6 97 is a truncated 3-byte sequence: one U+FFFD, like Python's errors='replace' */
    ZT_CHECK(zs_tok_encode(tok, "x\xE6\x97y\xFF", 5, 0, &a, &na, &err) == 0);
    ZT_CHECK(zs_tok_encode(tok, "x\xEF\xBF\xBDy\xEF\xBF\xBD", 8, 0, &b, &nb, &err) == 0);
    ZT_CHECK(na > 0 && ids_eq(a, na, b, nb));
    free(a);
    free(b);
    /* empty input */
    ZT_CHECK(zs_tok_encode(tok, NULL, 0, 1, &a, &na, &err) == 0 && na == 0);
    free(a);
    zs_tok_free(tok);
}

static void test_sentencepiece_style(void) {
    zs_tok_t *tok = load(SP_JSON);
    ZT_REQUIRE(tok != NULL);
    zs_err_t err = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    /* "ab a\xC3\xA9 c" -> ▁ab ▁a <0xC3> <0xA9> ▁ c ; "d" -> <unk> (fused with "dd") */
    ZT_CHECK(zs_tok_encode(tok, "ab a\xC3\xA9 cdd", 11, 1, &ids, &n, &err) == 0);
    const int32_t want[] = {1, 13, 11, 3, 4, 8, 14, 0};
    ZT_CHECK_MSG(ids_eq(ids, n, want, 8), "got %zu ids", n);
    char *text = NULL;
    ZT_CHECK(zs_tok_decode(tok, ids, n, 0, &text, NULL, &err) == 0);
    ZT_CHECK(text && strcmp(text, "<s> ab a\xC3\xA9 c<unk>") == 0);
    free(text);
    ZT_CHECK(zs_tok_decode(tok, ids, n, 1, &text, NULL, &err) == 0); /* <s>, <unk> skipped */
    ZT_CHECK(text && strcmp(text, "ab a\xC3\xA9 c") == 0);
    free(text);
    free(ids);
    /* "<s>" in the text is recognised; the text after it gets its own "▁" */
    ZT_CHECK(zs_tok_encode(tok, "<s>ab", 5, 0, &ids, &n, &err) == 0);
    const int32_t want2[] = {1, 13};
    ZT_CHECK(ids_eq(ids, n, want2, 2));
    free(ids);
    ZT_CHECK(zs_tok_bos_id(tok) == 1 && zs_tok_eos_id(tok) == 2);
    zs_tok_free(tok);
}

static void test_stream_split_utf8(void) {
    zs_tok_t *tok = load(SP_JSON);
    ZT_REQUIRE(tok != NULL);
    zs_err_t err = {0};
    zs_tok_stream_t *s = NULL;
    ZT_REQUIRE(zs_tok_stream_new(tok, 1, &s, &err) == 0);
    const char *t;
    size_t tl;
    /* ▁ab, then 日 as three byte-fallback tokens, then ▁a */
    ZT_CHECK(zs_tok_stream_step(s, 13, &t, &tl, &err) == 0 && tl == 2 && memcmp(t, "ab", 2) == 0);
    ZT_CHECK(zs_tok_stream_step(s, 5, &t, &tl, &err) == 0 && tl == 0);
    ZT_CHECK(zs_tok_stream_step(s, 6, &t, &tl, &err) == 0 && tl == 0);
    ZT_CHECK(zs_tok_stream_step(s, 7, &t, &tl, &err) == 0 && tl == 3 &&
             memcmp(t, "\xE6\x97\xA5", 3) == 0);
    /* an invalid id is an error naming it and leaves the stream usable */
    ZT_CHECK(zs_tok_stream_step(s, 99, &t, &tl, &err) == ZS_EINVAL);
    ZT_CHECK_STR_CONTAINS(err.msg, "99");
    zs_err_clear(&err);
    ZT_CHECK(zs_tok_stream_step(s, 11, &t, &tl, &err) == 0 && tl == 2 && memcmp(t, " a", 2) == 0);
    /* a dangling lead byte is held back, and flush() emits it as U+FFFD */
    ZT_CHECK(zs_tok_stream_step(s, 5, &t, &tl, &err) == 0 && tl == 0);
    ZT_CHECK(zs_tok_stream_flush(s, &t, &tl, &err) == 0 && tl == 3 &&
             memcmp(t, "\xEF\xBF\xBD", 3) == 0);
    zs_tok_stream_free(s);
    zs_tok_free(tok);
}

static void test_decode_rejects_bad_ids(void) {
    zs_tok_t *tok = load(SP_JSON);
    ZT_REQUIRE(tok != NULL);
    zs_err_t err = {0};
    char *text = NULL;
    const int32_t bad[] = {9, 15};
    ZT_CHECK(zs_tok_decode(tok, bad, 2, 0, &text, NULL, &err) == ZS_EINVAL);
    ZT_CHECK(text == NULL);
    ZT_CHECK_STR_CONTAINS(err.msg, "token id 15 at position 1");
    zs_err_clear(&err);
    const int32_t neg[] = {-5};
    ZT_CHECK(zs_tok_decode(tok, neg, 1, 0, &text, NULL, &err) == ZS_EINVAL);
    ZT_CHECK_STR_CONTAINS(err.msg, "-5");
    zs_tok_free(tok);
}

static void test_long_text_roundtrip(void) {
    char *json = gpt2_json("");
    zs_tok_t *tok = load(json);
    free(json);
    ZT_REQUIRE(tok != NULL);
    size_t len = 100000;
    char *text = malloc(len);
    ZT_REQUIRE(text != NULL);
    const char *words[] = {"hello ", "world\n", "   ", "\t", "12345", "\xE6\x97\xA5\xE6\x9C\xAC",
                           "\xF0\x9F\x98\x80", "x"};
    size_t pos = 0;
    unsigned seed = 1;
    while (pos < len) {
        seed = seed * 1103515245u + 12345u;
        const char *w = words[(seed >> 16) % 8];
        size_t wl = strlen(w);
        if (pos + wl > len) w = "x", wl = 1;
        memcpy(text + pos, w, wl);
        pos += wl;
    }
    zs_err_t err = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    ZT_CHECK(zs_tok_encode(tok, text, len, 0, &ids, &n, &err) == 0);
    ZT_CHECK(n > len / 10);
    char *back = NULL;
    size_t bl = 0;
    ZT_CHECK(zs_tok_decode(tok, ids, n, 0, &back, &bl, &err) == 0);
    ZT_CHECK(back && bl == len && memcmp(back, text, len) == 0);
    free(back);
    free(ids);
    /* a single 100 KB "word" (no pre-tokenizer splits) in the SentencePiece model */
    zs_tok_t *sp = load(SP_JSON);
    ZT_REQUIRE(sp != NULL);
    memset(text, 'a', len);
    for (size_t i = 1; i < len; i += 2) text[i] = 'b';
    ZT_CHECK(zs_tok_encode(sp, text, len, 0, &ids, &n, &err) == 0);
    ZT_CHECK(n == len / 2 && ids[0] == 13 && ids[1] == 12 && ids[n - 1] == 12);
    free(ids);
    zs_tok_free(sp);
    free(text);
    zs_tok_free(tok);
}

typedef struct bad_case {
    const char *extra;     /* spliced into the GPT-2 JSON, or a whole document when raw */
    int raw;
    int code;
    const char *needle;
} bad_case;

static void test_malformed_files(void) {
    static const bad_case cases[] = {
        {"not json", 1, ZS_EFORMAT, "invalid JSON at line 1"},
        {"[1,2]", 1, ZS_EFORMAT, "top level must be an object"},
        {"{}", 1, ZS_EFORMAT, "model is missing"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":[],\"merges\":[]}}", 1, ZS_EFORMAT, "model.vocab must be an object"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1},\"merges\":[]}}", 1, ZS_EFORMAT, "model.vocab['a']: id"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0},\"merges\":[]}}", 1, ZS_EFORMAT, "id 0 is used by two tokens"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a b\"]}}", 1, ZS_EFORMAT, "model.merges[0]: token 'b' is not in model.vocab"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a a\"]}}", 1, ZS_EFORMAT, "merged token 'aa'"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"aaa\"]}}", 1, ZS_EFORMAT, "model.merges[0] 'aaa' is not"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[7]}}", 1, ZS_EFORMAT, "model.merges[0] must be"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[],\"unk_token\":\"<unk>\"}}", 1, ZS_EFORMAT, "unk_token '<unk>' is not in model.vocab"},
        {"{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", 1, ZS_EUNSUPPORTED, "model.type 'Unigram' is not supported"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"model\":{}}", 1, ZS_EFORMAT, "duplicate"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":99999999},\"merges\":[]}}", 1, ZS_EFORMAT, "id must be an integer"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}", 1, ZS_EFORMAT, "vocabulary is empty"},
        {",\"normalizer\":{\"type\":\"Lowercase\"}", 0, ZS_EUNSUPPORTED, "normalizer: unsupported normalizer 'Lowercase'"},
        {",\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFKC\"},{\"type\":\"nfc\"}]}", 0, ZS_EUNSUPPORTED, "normalizer.normalizers[1]: unsupported normalizer 'nfc'"},
        {",\"truncation\":{\"max_length\":5}", 0, ZS_EUNSUPPORTED, "truncation must be null"},
        {",\"padding\":{}", 0, ZS_EUNSUPPORTED, "padding must be null"},
        {",\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<x>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"special_tokens\":{}}", 0, ZS_EFORMAT, "special token '<x>' not defined"},
        {",\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[],\"special_tokens\":{}}", 0, ZS_EFORMAT, "single has no Sequence A"},
        {",\"post_processor\":{\"type\":\"RobertaProcessing\",\"cls\":[\"<s>\",9999],\"sep\":[\"</s>\",1]}", 0, ZS_EFORMAT, "special token id 9999 is not in the vocabulary"},
        {",\"post_processor\":{\"type\":\"Weird\"}", 0, ZS_EUNSUPPORTED, "unsupported post_processor 'Weird'"},
        {",\"decoder\":{\"type\":\"CTC\"}", 0, ZS_EUNSUPPORTED, "decoder: unsupported decoder 'CTC'"},
        {",\"decoder\":{\"type\":\"Strip\",\"content\":\"ab\",\"start\":1,\"stop\":0}", 0, ZS_EFORMAT, "decoder.content must be exactly one character"},
        {",\"pre_tokenizer\":{\"type\":\"BertPreTokenizer\"}", 0, ZS_EUNSUPPORTED, "unsupported pre_tokenizer 'BertPreTokenizer'"},
        {",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\w+\"},\"behavior\":\"Isolated\",\"invert\":false}", 0, ZS_EUNSUPPORTED, "regex escape \\w"},
        {",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"x?\"},\"behavior\":\"Isolated\",\"invert\":false}", 0, ZS_EUNSUPPORTED, "can match the empty string"},
        {",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\",\"invert\":false}", 0, ZS_EFORMAT, "pre_tokenizer.pattern: invalid regex"},
        {",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},\"behavior\":\"Sideways\",\"invert\":false}", 0, ZS_EFORMAT, "behavior 'Sideways'"},
        {",\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"_\",\"prepend_scheme\":\"sometimes\"}", 0, ZS_EFORMAT, "prepend_scheme 'sometimes'"},
        {",\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":{}}", 0, ZS_EFORMAT, "pretokenizers must be an array"},
        {",\"pre_tokenizer\":5", 0, ZS_EFORMAT, "pre_tokenizer must be an object or null"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const bad_case *c = &cases[i];
        char *json = c->raw ? NULL : gpt2_json(c->extra);
        const char *doc = c->raw ? c->extra : json;
        zs_err_t err = {0};
        zs_tok_t *tok = (zs_tok_t *)1;
        int rc = zs_tok_load_from_string(doc, strlen(doc), "bad.json", &tok, &err);
        ZT_CHECK_MSG(rc == c->code, "case %zu: rc %d (%s), want %d", i, rc, err.msg, c->code);
        ZT_CHECK(tok == NULL);
        ZT_CHECK_MSG(strstr(err.msg, c->needle) != NULL, "case %zu: '%s' lacks '%s'", i, err.msg,
                     c->needle);
        ZT_CHECK_STR_CONTAINS(err.msg, "bad.json");
        free(json);
    }
}

static void test_added_token_id_mismatch(void) {
    /* tokenizers would give the added token id 261 (right after the vocab), not 300 */
    static const char doc[] =
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[]},"
        "\"added_tokens\":[{\"id\":300,\"content\":\"<x>\",\"special\":true}]}";
    zs_err_t err = {0};
    zs_tok_t *tok = NULL;
    ZT_CHECK(zs_tok_load_from_string(doc, sizeof doc - 1, "ids.json", &tok, &err) == ZS_EFORMAT);
    ZT_CHECK_STR_CONTAINS(err.msg, "added_tokens[0] '<x>' has id 300 but tokenizers would assign id 2");
    static const char ok[] =
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[]},"
        "\"added_tokens\":[{\"id\":2,\"content\":\"<x>\",\"special\":true},"
        "{\"id\":0,\"content\":\"a\",\"special\":false}]}";
    zs_err_clear(&err);
    ZT_CHECK(zs_tok_load_from_string(ok, sizeof ok - 1, "ids.json", &tok, &err) == 0);
    ZT_CHECK(zs_tok_vocab_size(tok) == 3);
    zs_tok_free(tok);
}

static void test_load_missing_file(void) {
    zs_err_t err = {0};
    zs_tok_t *tok = NULL;
    ZT_CHECK(zs_tok_load("/nonexistent/dir/tokenizer.json", &tok, &err) == ZS_ENOENT);
    ZT_CHECK(tok == NULL);
    ZT_CHECK_STR_CONTAINS(err.msg, "/nonexistent/dir/tokenizer.json");
    zs_err_clear(&err);
    ZT_CHECK(zs_tok_load(NULL, &tok, &err) == ZS_EINVAL);
}

int main(void) {
    ZT_RUN(test_byte_level_encode_decode);
    ZT_RUN(test_invalid_utf8_is_replaced);
    ZT_RUN(test_sentencepiece_style);
    ZT_RUN(test_stream_split_utf8);
    ZT_RUN(test_decode_rejects_bad_ids);
    ZT_RUN(test_long_text_roundtrip);
    ZT_RUN(test_malformed_files);
    ZT_RUN(test_added_token_id_mismatch);
    ZT_RUN(test_load_missing_file);
    return ZT_DONE();
}
